// One file for componentize-js: the adapter, its logic and lossless-json. The world's
// imports (`crm:adapter/...`) stay imports: the component provides them.
export default {
  input: "src/adapter.js",
  external: [/^crm:adapter\//],
  output: { file: "dist/bundle.js", format: "esm" },
};
