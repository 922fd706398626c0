// Compiles a contract to its creation bytecode (hex): NAME.sol → NAME.bin.
// The committed .bin files were produced by solc 0.8.28 (npm `solc@0.8.28`,
// soljson 0.8.28+commit.7893614a), optimizer on with 200 runs:
//   npm install solc@0.8.28
//   node compile.js TestToken.sol > TestToken.bin
//   node compile.js Forwarder.sol > Forwarder.bin
const solc = require('solc');
const fs = require('fs');
const path = require('path');
const file = process.argv[2];
const name = path.basename(file, '.sol');
const source = fs.readFileSync(file, 'utf8');
const input = {
  language: 'Solidity',
  sources: { [`${name}.sol`]: { content: source } },
  settings: { optimizer: { enabled: true, runs: 200 }, outputSelection: { '*': { '*': ['evm.bytecode.object'] } } },
};
const output = JSON.parse(solc.compile(JSON.stringify(input)));
for (const error of output.errors || []) {
  if (error.severity === 'error') {
    console.error(error.formattedMessage);
    process.exit(1);
  }
}
process.stdout.write(output.contracts[`${name}.sol`][name].evm.bytecode.object + '\n');
