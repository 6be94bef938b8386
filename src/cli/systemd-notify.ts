/** sd_notify(3) without libsystemd: one datagram to the socket systemd names in $NOTIFY_SOCKET
 * (set for Type=notify units, or with NotifyAccess=). Node and Bun have no Unix datagram
 * sockets, so this calls libc through bun:ffi; a spawned `systemd-notify` would be refused,
 * its PID not being the service's main PID. Best effort: false when nothing was sent. */
import { dlopen, FFIType, ptr } from "bun:ffi";

const AF_UNIX = 1;
const SOCK_DGRAM = 2;
const SOCK_CLOEXEC = 0o2000000;
const MSG_NOSIGNAL = 0x4000;
/** sizeof(struct sockaddr_un): a 2-byte family and a 108-byte path */
const SOCKADDR_UN_SIZE = 110;

const libcNames = ["libc.so.6", `libc.musl-${process.arch === "arm64" ? "aarch64" : "x86_64"}.so.1`];

function openLibc() {
  const symbols = {
    socket: { args: [FFIType.i32, FFIType.i32, FFIType.i32], returns: FFIType.i32 },
    sendto: { args: [FFIType.i32, FFIType.ptr, FFIType.u64, FFIType.i32, FFIType.ptr, FFIType.u32], returns: FFIType.i64 },
    close: { args: [FFIType.i32], returns: FFIType.i32 },
  } as const;
  for (const name of libcNames) {
    try {
      return dlopen(name, symbols);
    } catch {}
  }
  return null;
}

/** Send `state` (e.g. "STOPPING=1") to systemd when it listens; "@" at the start of the
 * socket path names an abstract socket. */
export function notifySystemd(state: string, socketPath = process.env.NOTIFY_SOCKET): boolean {
  if (!socketPath || process.platform !== "linux") return false;
  const path = Buffer.from(socketPath.startsWith("@") ? `\0${socketPath.slice(1)}` : socketPath);
  if (path.length >= SOCKADDR_UN_SIZE - 2) return false;
  const libc = openLibc();
  if (!libc) return false;
  try {
    const addr = Buffer.alloc(SOCKADDR_UN_SIZE);
    addr.writeUInt16LE(AF_UNIX, 0);
    path.copy(addr, 2);
    // an abstract name's length counts, a path's ends at its NUL
    const addrLen = socketPath.startsWith("@") ? 2 + path.length : SOCKADDR_UN_SIZE;
    const fd = libc.symbols.socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return false;
    const message = Buffer.from(state);
    const sent = libc.symbols.sendto(fd, ptr(message), message.length, MSG_NOSIGNAL, ptr(addr), addrLen);
    libc.symbols.close(fd);
    return Number(sent) === message.length;
  } finally {
    libc.close();
  }
}
