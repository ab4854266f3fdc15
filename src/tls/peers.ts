/**
 * The CIDR lists that decide which TCP peers are believed (`trustedProxies[].cidrs`): parsed once,
 * matched per request against `socket.remoteAddress`. A Unix socket's peer has no address: the
 * listener names it {@link UNIX_SOCKET_PEER}, which only a `unixSocket: true` entry matches.
 */
import net, { isIP } from 'node:net';

/**
 * The peer "address" of a connection to the decision API's Unix socket. Not an IP address, so no
 * TCP peer and no CIDR list can ever match it; and an undefined remoteAddress (a TCP socket already
 * closed) never becomes it.
 */
export const UNIX_SOCKET_PEER = 'unix';

const PREFIX = /^(0|[1-9][0-9]{0,2})$/;

/**
 * A BlockList of IPv4 and IPv6 CIDRs and bare addresses (`10.0.0.0/8`, `fd00::/8`, `127.0.0.1`,
 * `::1`). Host bits below the prefix are ignored (`10.1.2.3/8` is `10.0.0.0/8`).
 *
 * @throws Error naming the first bad entry.
 */
export function parseCidrList(cidrs: string[]): net.BlockList {
  const list = new net.BlockList();
  for (const entry of cidrs) {
    if (typeof entry !== 'string') throw new Error(`invalid CIDR entry: ${JSON.stringify(entry)}`);
    const slash = entry.indexOf('/');
    const address = slash === -1 ? entry : entry.slice(0, slash);
    const family = isIP(address);
    if (family === 0) throw new Error(`invalid CIDR entry ${JSON.stringify(entry)}: not an IP address`);
    const type = family === 4 ? 'ipv4' : 'ipv6';
    if (slash === -1) {
      list.addAddress(address, type);
      continue;
    }
    const prefixText = entry.slice(slash + 1);
    const prefix = Number(prefixText);
    if (!PREFIX.test(prefixText) || prefix > (family === 4 ? 32 : 128)) {
      throw new Error(`invalid CIDR entry ${JSON.stringify(entry)}: bad prefix length`);
    }
    list.addSubnet(address, prefix, type);
  }
  return list;
}

const IPV4_MAPPED = /^::ffff:(\d{1,3}(?:\.\d{1,3}){3})$/i;

/**
 * Whether a TCP peer address (`socket.remoteAddress`) is in `list`. An IPv4-mapped IPv6 peer
 * (`::ffff:127.0.0.1`, what a dual-stack listener reports) also matches IPv4 entries. A zone id
 * (`fe80::1%eth0`) is ignored. Undefined or unparseable addresses are never in the list.
 */
export function peerInList(list: net.BlockList, address: string | undefined): boolean {
  if (typeof address !== 'string') return false;
  const percent = address.indexOf('%');
  const bare = percent === -1 ? address : address.slice(0, percent);
  const family = isIP(bare);
  if (family === 4) return list.check(bare, 'ipv4');
  if (family !== 6) return false;
  if (list.check(bare, 'ipv6')) return true;
  const mapped = IPV4_MAPPED.exec(bare);
  return mapped !== null && isIP(mapped[1]!) === 4 && list.check(mapped[1]!, 'ipv4');
}
