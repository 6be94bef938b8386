# Evaluates nix/module.nix and nix/package.nix without nixpkgs or NixOS, for the tests:
#   (import ./eval.nix).evalModule { services.ncps = { enable = true; ... }; }
#   (import ./eval.nix).package "aarch64-linux"
# evalModule does what the NixOS module system does for this one module: option values are
# the definitions given (type-checked, unknown or read-only ones refused) or the defaults,
# `config = mkIf ...` applies when its condition holds, and failed assertions stop evaluation.
let
  lib = import ./lib.nix;

  fakeStorePath = name: "/nix/store/00000000000000000000000000000000-${name}";
  fakeDerivation = name: attrs: attrs // {
    type = "derivation";
    inherit name;
    outPath = fakeStorePath name;
  };

  pkgsFor = system: rec {
    stdenvNoCC = {
      hostPlatform.system = system;
      mkDerivation = attrs: fakeDerivation "${attrs.pname}-${attrs.version}" attrs;
    };
    stdenv = stdenvNoCC // {
      cc.cc.lib = fakeDerivation "gcc-lib" { };
    };
    fetchurl = attrs: fakeDerivation (baseNameOf attrs.url) attrs;
    autoPatchelfHook = fakeDerivation "auto-patchelf-hook" { };
    makeWrapper = fakeDerivation "make-wrapper" { };
    writeText = name: text: fakeDerivation name { inherit text; };
    callPackage = path: overrides:
      import path ({ inherit lib stdenvNoCC stdenv fetchurl autoPatchelfHook makeWrapper; } // overrides);
  };

  missing = { __missing = true; };
  isMissing = v: builtins.isAttrs v && v ? __missing;
  isOption = v: builtins.isAttrs v && (v._type or null) == "option";

  # The value of every option under `options`, from the definitions in `defs`.
  resolve = path: options: defs:
    if isOption options then
      let
        value =
          if !isMissing defs then
            (if options.readOnly or false then throw "The option `${path}' is read-only, but it is set." else defs)
          else if options ? default then
            options.default
          else
            throw "The option `${path}' is used but not defined.";
      in
      if options.type.check value then value else throw "The option `${path}' is not of type `${options.type.name}'."
    else
      let
        given = if isMissing defs then [ ] else builtins.attrNames defs;
        unknown = builtins.filter (name: !(options ? ${name})) given;
      in
      if unknown != [ ] then
        throw "The option `${path}.${builtins.head unknown}' does not exist."
      else
        builtins.mapAttrs (name: sub: resolve "${path}.${name}" sub (if isMissing defs then missing else defs.${name} or missing)) options;

  evalModule =
    configuration:
    let
      module = import ../../nix/module.nix;
      pkgs = pkgsFor "x86_64-linux";
      evaluated = module { inherit config lib pkgs; };
      body = evaluated.config;
      active = if (body._type or null) == "if" then (if body.condition then body.content else { }) else body;
      # The option trees this one module touches (listed, so building `config` does not force
      # the module's own condition, which reads `config`).
      config = {
        services.ncps = resolve "services.ncps" evaluated.options.services.ncps (configuration.services.ncps or missing);
        systemd.services = active.systemd.services or { };
        networking.firewall.allowedTCPPorts = active.networking.firewall.allowedTCPPorts or [ ];
        assertions = active.assertions or [ ];
      };
      failed = builtins.filter (a: !a.assertion) config.assertions;
    in
    if failed != [ ] then
      throw "Failed assertions:\n- ${builtins.concatStringsSep "\n- " (map (a: a.message) failed)}"
    else
      {
        # Forced only when enabled, as NixOS builds it only then.
        configFile =
          if config.services.ncps.enable then
            {
              path = config.services.ncps.configFile.outPath;
              text = config.services.ncps.configFile.text;
            }
          else
            null;
        service = config.systemd.services.ncps or null;
        inherit (config.networking.firewall) allowedTCPPorts;
      };

  package =
    system:
    let
      drv = (pkgsFor system).callPackage ../../nix/package.nix { };
    in
    {
      inherit (drv) pname version installPhase dontStrip;
      inherit (drv.src) url hash;
      inherit (drv.meta) mainProgram platforms;
    };
in
{
  inherit evalModule package;
}
