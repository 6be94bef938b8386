/** The flags of `ncps import-go` that name the Go deployment: kept apart from import-go.ts so
 * `--help` loads none of the import's code. */
import type { FlagSpec } from "./flags.ts";

/** The Go ncps's flags that name its deployment, each taken here as `--from-<name>`. */
export const importGoFlags: FlagSpec[] = [
  { name: "from-cache-database-url", type: "string", valueHint: "url", help: "The Go ncps's --cache-database-url (sqlite:, postgres://, mysql://); only read" },
  { name: "from-cache-storage-local", type: "string", valueHint: "path", help: "The Go ncps's --cache-storage-local directory; only read" },
  { name: "from-cache-storage-s3-bucket", type: "string", valueHint: "bucket", help: "The Go ncps's --cache-storage-s3-bucket; only read" },
  { name: "from-cache-storage-s3-endpoint", type: "string", valueHint: "url", help: "The Go ncps's --cache-storage-s3-endpoint (without a scheme, --from-cache-storage-s3-use-ssl decides it)" },
  { name: "from-cache-storage-s3-region", type: "string", valueHint: "region", help: "The Go ncps's --cache-storage-s3-region" },
  { name: "from-cache-storage-s3-access-key-id", type: "string", valueHint: "id", help: "The Go ncps's --cache-storage-s3-access-key-id (with neither key, the AWS chain's credentials: environment, profile, role)" },
  { name: "from-cache-storage-s3-secret-access-key", type: "string", valueHint: "key", help: "The Go ncps's --cache-storage-s3-secret-access-key" },
  { name: "from-cache-storage-s3-force-path-style", type: "boolean", help: "The Go ncps's --cache-storage-s3-force-path-style" },
  { name: "from-cache-storage-s3-use-ssl", type: "boolean", help: "The Go ncps's --cache-storage-s3-use-ssl, for an endpoint without a scheme (default true)" },
  { name: "from-cache-secret-key-path", type: "string", valueHint: "path", help: "The Go ncps's --cache-secret-key-path, when it signed with a key file" },
  {
    name: "keep-signing-key",
    type: "boolean",
    help: "Import even though this ncps already signs with another key than the Go ncps's (or the Go key cannot be found): narinfos are then signed with this ncps's key, which clients must trust",
  },
];

