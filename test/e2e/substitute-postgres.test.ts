/** The real-Nix scenario with ncps keeping its metadata in PostgreSQL (a fresh database). */
import { describeSubstitutionOnServerDatabase } from "../helpers/substitution.ts";

await describeSubstitutionOnServerDatabase("postgres", "PostgreSQL");
