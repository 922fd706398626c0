// SPDX-License-Identifier: Apache-2.0
// Internal transfers for walletwatch's EVM tests: native value a contract
// pays on, which no log and no transaction field shows.
pragma solidity 0.8.28;

contract Forwarder {
    /// Pays `msg.value` on to `to` from inside the contract.
    function forward(address payable to) external payable {
        (bool ok, ) = to.call{value: msg.value}("");
        require(ok, "forward");
    }

    /// Pays `to`, then reverts: the payment is undone.
    function forwardThenRevert(address payable to) external payable {
        (bool ok, ) = to.call{value: msg.value}("");
        require(ok, "forward");
        revert("undone");
    }

    /// Succeeds, but the payment to `to` happens in a call that reverts:
    /// the value stays here, and `to` received nothing.
    function tryForwardThenRevert(address payable to) external payable {
        try this.forwardThenRevert{value: msg.value}(to) {} catch {}
    }
}
