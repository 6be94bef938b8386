// Replaced at compile time by build.ts (see `define` there); these are the source-tree defaults.
declare const NCPS_VERSION: string | undefined;
declare const NCPS_COMMIT: string | undefined;

export const version: string = typeof NCPS_VERSION === "string" ? NCPS_VERSION : "0.1.0-dev";
export const commit: string = typeof NCPS_COMMIT === "string" ? NCPS_COMMIT : "unknown";
