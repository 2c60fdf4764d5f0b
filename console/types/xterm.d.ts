// /vendor/xterm.mjs (copied from npm by `make console`): the npm package's types.
export * from "@xterm/xterm";
