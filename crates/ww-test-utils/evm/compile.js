// Compiles TestToken.sol to TestToken.bin (the creation bytecode, hex).
// The committed TestToken.bin was produced by solc 0.8.28 (npm `solc@0.8.28`,
// soljson 0.8.28+commit.7893614a), optimizer on with 200 runs:
//   npm install solc@0.8.28 && node compile.js TestToken.sol > TestToken.bin
const solc = require('solc');
const fs = require('fs');
const source = fs.readFileSync(process.argv[2], 'utf8');
const input = {
  language: 'Solidity',
  sources: { 'TestToken.sol': { content: source } },
  settings: { optimizer: { enabled: true, runs: 200 }, outputSelection: { '*': { '*': ['evm.bytecode.object'] } } },
};
const output = JSON.parse(solc.compile(JSON.stringify(input)));
for (const error of output.errors || []) {
  if (error.severity === 'error') {
    console.error(error.formattedMessage);
    process.exit(1);
  }
}
process.stdout.write(output.contracts['TestToken.sol'].TestToken.evm.bytecode.object + '\n');
