import { describeSubstitution } from "../helpers/substitution.ts";

describeSubstitution("e2e: real Nix substitutes through ncps (sqlite, local storage)");
