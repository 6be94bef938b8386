/** Real signed narinfos from public caches (copied from shared/fixtures; see README there). */
import { readFileSync, readdirSync } from "node:fs";

export const FIXTURES_DIR = new URL("../fixtures/narinfo/", import.meta.url).pathname;

export const fixtureHashes = (): string[] =>
  readdirSync(FIXTURES_DIR)
    .filter((f) => f.endsWith(".narinfo"))
    .map((f) => f.slice(0, -".narinfo".length))
    .sort();

export const readFixture = (hash: string): string => readFileSync(`${FIXTURES_DIR}${hash}.narinfo`, "utf8");

export const CACHE_NIXOS_ORG_KEY = "cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=";
export const NIX_COMMUNITY_KEY = "nix-community.cachix.org-1:mB9FSh9qf2dCimDSUo8Zy7bkq5CX+/rkCWyvRCYg3Fs=";
