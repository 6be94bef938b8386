# ncps from its release binaries (build.ts output: ncps-linux-x64, ncps-linux-arm64).
#
#   ncps = pkgs.callPackage ./nix/package.nix { };
#
# The hashes are placeholders until a release is published: build once, then paste the
# hash Nix reports ("got: sha256-...") for each platform.
{
  lib,
  stdenvNoCC,
  stdenv,
  fetchurl,
  autoPatchelfHook,
  makeWrapper,
  # Placeholder like install.sh's default: the directory holding a release's files.
  releaseBaseUrl ? "https://github.com/ncps-ts/ncps/releases/download",
}:

let
  version = "0.1.0";
  binaries = {
    x86_64-linux = {
      name = "ncps-linux-x64";
      hash = lib.fakeHash;
    };
    aarch64-linux = {
      name = "ncps-linux-arm64";
      hash = lib.fakeHash;
    };
  };
  system = stdenvNoCC.hostPlatform.system;
  binary = binaries.${system} or (throw "ncps: no release binary for ${system}");
in
stdenvNoCC.mkDerivation {
  pname = "ncps";
  inherit version;

  src = fetchurl {
    url = "${releaseBaseUrl}/v${version}/${binary.name}";
    inherit (binary) hash;
  };
  dontUnpack = true;

  # The binary is Bun's runtime with ncps inside: patchelf points it at Nix's glibc (the
  # embedded program survives that); stripping would remove the embedded program.
  nativeBuildInputs = [
    autoPatchelfHook
    makeWrapper
  ];
  buildInputs = [ stdenv.cc.cc.lib ];
  dontStrip = true;

  # The xz addon is unpacked to TMPDIR and loaded at run time; it needs libgcc_s, which the
  # Bun runtime itself does not load, so the wrapper puts it on the library path.
  installPhase = ''
    runHook preInstall
    install -Dm0755 $src $out/libexec/ncps
    makeWrapper $out/libexec/ncps $out/bin/ncps \
      --prefix LD_LIBRARY_PATH : ${lib.makeLibraryPath [ stdenv.cc.cc.lib ]}
    runHook postInstall
  '';

  doInstallCheck = true;
  installCheckPhase = ''
    $out/bin/ncps --version | grep -F "ncps ${version}"
  '';

  meta = {
    description = "Nix binary cache proxy: a pull-through cache for Nix, on Bun";
    homepage = "https://github.com/ncps-ts/ncps";
    license = lib.licenses.mit;
    mainProgram = "ncps";
    platforms = builtins.attrNames binaries;
    sourceProvenance = [ lib.sourceTypes.binaryNativeCode ];
  };
}
