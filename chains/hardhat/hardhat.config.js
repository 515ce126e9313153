// The Hardhat network that `make setup-dev` installs into .tools/hardhat/ as a second EVM chain
// for the tests (tests/e2e/test_other_chain.py). Only its built-in network is used: no
// compilation, no plugins. Chain id 1337 (a devnet id, unlike Anvil's 31337) so that nothing
// can pass by assuming Anvil's chain.
module.exports = {
  networks: {
    hardhat: {
      chainId: 1337,
      // The same public test mnemonic as the Anvil devnet (src/allmende/chain/accounts.py).
      accounts: {
        mnemonic: "test test test test test test test test test test test junk",
        count: 10,
        accountsBalance: "10000000000000000000000", // 10,000 ether each
      },
    },
  },
};
