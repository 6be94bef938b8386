// Migrations are imported as text (`with { type: "text" }`) so `bun build --compile`
// embeds them in the binary.
declare module "*.sql" {
  const text: string;
  export default text;
}
