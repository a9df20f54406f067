/** noble's `with-bindings` entry point ships without types: `(bindings) => Noble`. */
declare module "@abandonware/noble/with-bindings" {
  const withBindings: (bindings: unknown) => unknown;
  export default withBindings;
}
