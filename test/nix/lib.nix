# A stand-in for the parts of nixpkgs' `lib` that nix/module.nix and nix/package.nix use,
# written from builtins so the module can be evaluated on a machine without nixpkgs.
# Each function behaves like its nixpkgs namesake for the inputs ncps's files give it.
# Types carry a `check`, so a value of the wrong type fails evaluation as in NixOS.
rec {
  mkOption = attrs: attrs // { _type = "option"; };
  mkEnableOption = name: mkOption {
    type = types.bool;
    default = false;
    description = "Whether to enable ${name}.";
  };
  mkIf = condition: content: {
    _type = "if";
    inherit condition content;
  };
  literalExpression = text: {
    _type = "literalExpression";
    inherit text;
  };

  types = {
    str = { name = "str"; check = builtins.isString; };
    bool = { name = "bool"; check = builtins.isBool; };
    int = { name = "int"; check = builtins.isInt; };
    anything = { name = "anything"; check = _: true; };
    package = {
      name = "package";
      check = v: builtins.isAttrs v && (v.type or null) == "derivation";
    };
    listOf = t: {
      name = "listOf ${t.name}";
      check = v: builtins.isList v && builtins.all t.check v;
    };
    nullOr = t: {
      name = "nullOr ${t.name}";
      check = v: v == null || t.check v;
    };
    attrsOf = t: {
      name = "attrsOf ${t.name}";
      check = v: builtins.isAttrs v && builtins.all t.check (builtins.attrValues v);
    };
  };

  filterAttrs = pred: set:
    builtins.listToAttrs (
      builtins.concatMap (name: if pred name set.${name} then [ { inherit name; value = set.${name}; } ] else [ ]) (
        builtins.attrNames set
      )
    );

  # Right wins; attribute sets (not derivations) are merged key by key.
  recursiveUpdate = lhs: rhs:
    let
      mergeable = v: builtins.isAttrs v && (v.type or null) != "derivation";
    in
    lhs
    // builtins.mapAttrs (
      name: value: if lhs ? ${name} && mergeable lhs.${name} && mergeable value then recursiveUpdate lhs.${name} value else value
    ) rhs;

  optional = cond: x: if cond then [ x ] else [ ];

  hasPrefix = prefix: s: builtins.substring 0 (builtins.stringLength prefix) s == prefix;
  removePrefix = prefix: s:
    if hasPrefix prefix s then builtins.substring (builtins.stringLength prefix) (builtins.stringLength s) s else s;

  splitString = sep: s:
    let
      specials = [ "\\" "." "*" "+" "?" "(" ")" "[" "]" "{" "}" "|" "^" "$" ];
      regex = builtins.replaceStrings specials (map (c: "\\" + c) specials) sep;
    in
    builtins.filter builtins.isString (builtins.split regex s);

  last = list: builtins.elemAt list (builtins.length list - 1);

  toInt = s:
    if builtins.match "[0-9]+" s != null then builtins.fromJSON s else throw "toInt: not a decimal integer: ${s}";

  makeLibraryPath = packages: builtins.concatStringsSep ":" (map (p: "${p}/lib") packages);

  fakeHash = "sha256-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
  licenses.mit = { spdxId = "MIT"; };
  sourceTypes.binaryNativeCode = { isSource = false; };
}
