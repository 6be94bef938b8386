/** ncps's own narinfo signing key: from a file the user names, or generated once and kept in
 * the database so every replica (and every restart) signs with the same key. */
import type { MetadataStore } from "../db/metadata-store.ts";
import { errnoReason } from "../errors.ts";
import { NixFormatError } from "../nix/errors.ts";
import { formatSecretKey, generateSecretKey, parseSecretKey, type SecretKey } from "../nix/signature.ts";

const CONFIG_KEY = "signing_secret_key";

export class SigningKeyError extends Error {
  override name = "SigningKeyError";
}

export async function loadSigningKey(db: MetadataStore, opts: { path?: string; hostname: string }): Promise<SecretKey> {
  if (opts.path) {
    const file = Bun.file(opts.path);
    let text: string;
    try {
      text = await file.text();
    } catch (err) {
      throw new SigningKeyError(`cannot read secret key ${opts.path}: ${errnoReason(err)}`);
    }
    try {
      return parseSecretKey(text);
    } catch (err) {
      if (err instanceof NixFormatError) throw new SigningKeyError(`secret key ${opts.path}: ${err.message}`);
      throw err;
    }
  }
  const stored = await db.setConfigIfAbsent(CONFIG_KEY, formatSecretKey(generateSecretKey(opts.hostname)));
  return parseSecretKey(stored);
}

/** Make `key` (a Go ncps's, being imported) the key this ncps signs with, unless it has one
 * already: returns the key it signs with now, which is not `key` when it had another (in
 * --cache-secret-key-path, or stored earlier). A key already there is never replaced, since
 * the narinfos held were signed with it. */
export async function adoptSigningKey(db: MetadataStore, key: SecretKey, opts: { path?: string }): Promise<SecretKey> {
  if (opts.path) return loadSigningKey(db, { path: opts.path, hostname: key.name });
  return parseSecretKey(await db.setConfigIfAbsent(CONFIG_KEY, formatSecretKey(key)));
}
