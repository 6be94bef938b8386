/** The real-Nix scenario with ncps keeping its metadata in MariaDB (a fresh database). */
import { describeSubstitutionOnServerDatabase } from "../helpers/substitution.ts";

await describeSubstitutionOnServerDatabase("mysql", "MariaDB");
