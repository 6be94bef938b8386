# NixOS module: services.ncps runs ncps as a hardened systemd service (the same settings as
# nix/ncps.service). Every option lands in one JSON config file read through
# NCPS_CONFIG_FILE; `settings` adds any other key of the README option table, and wins over
# the named options.
{
  config,
  lib,
  pkgs,
  ...
}:

let
  cfg = config.services.ncps;
  inherit (lib) mkOption types;

  nullOrStr = description: mkOption {
    type = types.nullOr types.str;
    default = null;
    inherit description;
  };

  credentialsDir = "/run/credentials/ncps.service";

  # Named options as config-file keys; unset ones are left out so ncps's defaults apply.
  namedSettings = {
    server.addr = cfg.server.addr;
    cache = lib.filterAttrs (_: v: v != null) {
      hostname = cfg.cache.hostName;
      storage.local = cfg.cache.dataPath;
      temp-path = cfg.cache.tempPath;
      database-url = cfg.cache.databaseURL;
      max-size = cfg.cache.maxSize;
      lru = if cfg.cache.lru.schedule == null then null else { schedule = cfg.cache.lru.schedule; };
      allow-put-verb = cfg.cache.allowPutVerb;
      allow-delete-verb = cfg.cache.allowDeleteVerb;
      # The key file is handed over by systemd (LoadCredential), readable by the dynamic user.
      secret-key-path = if cfg.cache.secretKeyPath == null then null else "${credentialsDir}/secret-key";
      upstream = {
        urls = cfg.upstream.caches;
        public-keys = cfg.upstream.publicKeys;
      };
    };
  };

  listenPort = lib.toInt (lib.last (lib.splitString ":" cfg.server.addr));

  # A path under /var/lib or /var/cache becomes a directory systemd creates and hands to the
  # dynamic user (StateDirectory=, CacheDirectory=); any other must exist and is made writable.
  underDir = base: path: lib.hasPrefix base path && path != base;
  managedDirs = base: path: [ "ncps" ] ++ lib.optional (underDir base path && path != "${base}ncps") (lib.removePrefix base path);
in
{
  options.services.ncps = {
    enable = lib.mkEnableOption "ncps, a pull-through Nix binary cache proxy";

    package = mkOption {
      type = types.package;
      default = pkgs.callPackage ./package.nix { };
      defaultText = lib.literalExpression "pkgs.callPackage ./package.nix { }";
      description = "The ncps package to run.";
    };

    cache = {
      hostName = mkOption {
        type = types.str;
        example = "ncps.lan";
        description = "Host name of this cache; it names the signing key clients trust.";
      };
      dataPath = mkOption {
        type = types.str;
        default = "/var/lib/ncps";
        description = ''
          Directory for NARs, narinfos and the SQLite database. Under /var/lib it is created
          as a StateDirectory; elsewhere it must exist and be writable by the service.
        '';
      };
      tempPath = mkOption {
        type = types.str;
        default = "/var/cache/ncps";
        description = ''
          Directory for NARs being downloaded, also the service's TMPDIR; it must be
          writable (nothing there is executed). Under /var/cache it is a CacheDirectory.
        '';
      };
      databaseURL = nullOrStr "Database URL (sqlite:PATH, postgres://..., mysql://...); default: SQLite under dataPath.";
      maxSize = nullOrStr "Largest size of the stored NARs, e.g. \"100G\": past it ncps evicts the least recently used at once.";
      lru.schedule = nullOrStr "Also run the LRU eviction on this schedule, e.g. \"0 2 * * *\" or \"@every 1h\"; needs maxSize.";
      allowPutVerb = mkOption {
        type = types.bool;
        default = false;
        description = "Accept uploads (`nix copy --to`).";
      };
      allowDeleteVerb = mkOption {
        type = types.bool;
        default = false;
        description = "Accept DELETE of narinfos and NARs.";
      };
      secretKeyPath = nullOrStr ''
        Nix secret key file to sign with (a path outside the Nix store, as a string, so the
        key is not copied there). Default: a key generated once and kept in the database.
      '';
    };

    server.addr = mkOption {
      type = types.str;
      default = ":8501";
      description = "Address to listen on: host:port or :port.";
    };

    upstream = {
      caches = mkOption {
        type = types.listOf types.str;
        default = [ "https://cache.nixos.org" ];
        description = "Upstream cache URLs, in order of preference.";
      };
      publicKeys = mkOption {
        type = types.listOf types.str;
        default = [ "cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=" ];
        description = "Keys (name:base64) whose signatures on upstream narinfos are trusted.";
      };
    };

    openFirewall = mkOption {
      type = types.bool;
      default = false;
      description = "Open the TCP port of server.addr in the firewall.";
    };

    settings = mkOption {
      type = types.attrsOf types.anything;
      default = { };
      example = lib.literalExpression ''{ cache.upstream.negative-ttl = "5m"; log.level = "debug"; }'';
      description = ''
        Any other config-file keys (nested as in the README option table), merged over the
        ones the options above set.
      '';
    };

    configFile = mkOption {
      type = types.package;
      readOnly = true;
      default = pkgs.writeText "ncps-config.json" (builtins.toJSON (lib.recursiveUpdate namedSettings cfg.settings));
      defaultText = lib.literalExpression "the options above, as JSON";
      description = "The config file the service reads (NCPS_CONFIG_FILE).";
    };
  };

  config = lib.mkIf cfg.enable {
    assertions = [
      {
        assertion = cfg.cache.lru.schedule == null || cfg.cache.maxSize != null;
        message = "services.ncps.cache.lru.schedule needs services.ncps.cache.maxSize";
      }
    ];

    networking.firewall.allowedTCPPorts = lib.optional cfg.openFirewall listenPort;

    systemd.services.ncps = {
      description = "ncps: Nix binary cache proxy";
      wantedBy = [ "multi-user.target" ];
      wants = [ "network-online.target" ];
      after = [ "network-online.target" ];
      environment = {
        NCPS_CONFIG_FILE = "${cfg.configFile}";
        TMPDIR = cfg.cache.tempPath;
      };
      serviceConfig = {
        Type = "simple";
        ExecStart = "${cfg.package}/bin/ncps serve";
        DynamicUser = true;
        StateDirectory = managedDirs "/var/lib/" cfg.cache.dataPath;
        StateDirectoryMode = "0750";
        CacheDirectory = managedDirs "/var/cache/" cfg.cache.tempPath;
        CacheDirectoryMode = "0750";
        ReadWritePaths =
          lib.optional (!underDir "/var/lib/" cfg.cache.dataPath) cfg.cache.dataPath
          ++ lib.optional (!underDir "/var/cache/" cfg.cache.tempPath) cfg.cache.tempPath;
        WorkingDirectory = "/var/lib/ncps";
        LoadCredential = lib.optional (cfg.cache.secretKeyPath != null) "secret-key:${cfg.cache.secretKeyPath}";

        Restart = "on-failure";
        RestartSec = "5s";
        # above --server-shutdown-timeout (30s): ncps ends a slow shutdown itself, before SIGKILL
        TimeoutStopSec = "45s";
        LimitNOFILE = 65536;
        UMask = "0027";

        # Hardening, as in nix/ncps.service. Not MemoryDenyWriteExecute: the JIT needs it off.
        NoNewPrivileges = true;
        CapabilityBoundingSet = "";
        AmbientCapabilities = "";
        ProtectSystem = "strict";
        ProtectHome = true;
        PrivateTmp = true;
        PrivateDevices = true;
        PrivateMounts = true;
        PrivateUsers = true;
        DevicePolicy = "closed";
        ProtectKernelTunables = true;
        ProtectKernelModules = true;
        ProtectKernelLogs = true;
        ProtectControlGroups = true;
        ProtectClock = true;
        ProtectHostname = true;
        ProtectProc = "invisible";
        RestrictAddressFamilies = [
          "AF_INET"
          "AF_INET6"
          "AF_UNIX"
        ];
        RestrictNamespaces = true;
        RestrictRealtime = true;
        RestrictSUIDSGID = true;
        LockPersonality = true;
        RemoveIPC = true;
        SystemCallArchitectures = "native";
        SystemCallFilter = [
          "@system-service"
          "~@privileged"
        ];
        SystemCallErrorNumber = "EPERM";
      };
    };
  };
}
