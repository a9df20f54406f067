/** Files imported `with { type: "text" }` (Bun inlines them, so the compiled binaries carry them). */
declare module "*.yaml" {
  const text: string;
  export default text;
}
declare module "*.proto" {
  const text: string;
  export default text;
}
