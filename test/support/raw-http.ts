import { readdirSync, readlinkSync } from 'node:fs';
import { connect } from 'node:net';

export interface RawResponse {
  /** null when the server closed the connection without answering. */
  status: number | null;
  headers: Record<string, string>;
  body: string;
}

/**
 * Sends `head` then `body` on a fresh TCP connection, exactly as given (no framing added), and
 * reads the answer. With `cutAfter`, the connection is destroyed after that many body bytes: a
 * client that goes away mid-upload (the result then says nothing useful and is not awaited long).
 */
export function rawRequest(url: string, head: string, body: Uint8Array, opts: { cutAfter?: number; endAfterBody?: boolean } = {}): Promise<RawResponse> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve) => {
    const socket = connect(Number(port), hostname);
    const chunks: Buffer[] = [];
    let done = false;
    const finish = () => {
      if (done) return;
      done = true;
      const text = Buffer.concat(chunks).toString('latin1');
      const m = /^HTTP\/1\.1 (\d{3})[^\r\n]*\r\n([\s\S]*?)\r\n\r\n([\s\S]*)$/.exec(text);
      if (!m) return resolve({ status: null, headers: {}, body: text });
      const headers: Record<string, string> = {};
      for (const line of m[2].split('\r\n')) {
        const i = line.indexOf(':');
        headers[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim();
      }
      resolve({ status: Number(m[1]), headers, body: m[3] });
    };
    socket.on('data', (c) => chunks.push(c));
    socket.on('error', finish);
    socket.on('close', finish);
    socket.on('connect', () => {
      socket.write(head);
      if (opts.cutAfter !== undefined) {
        socket.write(body.subarray(0, opts.cutAfter), () => setTimeout(() => socket.destroy(), 50));
        return;
      }
      socket.write(body);
      if (opts.endAfterBody) socket.end();
    });
  });
}

/** A multipart body of the given file parts; `terminate: false` leaves off the closing boundary. */
export function multipart(parts: { field: string; filename: string; data: Uint8Array }[], opts: { boundary?: string; terminate?: boolean } = {}) {
  const boundary = opts.boundary ?? 'sparsoupboundary42';
  const pieces: Buffer[] = [];
  for (const p of parts) {
    pieces.push(Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="${p.field}"; filename="${p.filename}"\r\nContent-Type: application/octet-stream\r\n\r\n`));
    pieces.push(Buffer.from(p.data));
    pieces.push(Buffer.from('\r\n'));
  }
  if (opts.terminate !== false) pieces.push(Buffer.from(`--${boundary}--\r\n`));
  return { body: Buffer.concat(pieces), contentType: `multipart/form-data; boundary=${boundary}` };
}

/** `bytes` as HTTP/1.1 chunked transfer coding, in chunks of `size` bytes, with the final 0 chunk. */
export function chunked(bytes: Uint8Array, size = 4096): Buffer {
  const out: Buffer[] = [];
  for (let i = 0; i < bytes.length; i += size) {
    const c = bytes.subarray(i, i + size);
    out.push(Buffer.from(`${c.length.toString(16)}\r\n`), Buffer.from(c), Buffer.from('\r\n'));
  }
  out.push(Buffer.from('0\r\n\r\n'));
  return Buffer.concat(out);
}

/** Open file descriptors of a process (Linux), optionally only those on files under `under`. */
export function openFds(pid: number | 'self' = 'self', under?: string): number {
  const fds = readdirSync(`/proc/${pid}/fd`);
  if (under === undefined) return fds.length;
  let n = 0;
  for (const fd of fds) {
    try {
      if (readlinkSync(`/proc/${pid}/fd/${fd}`).startsWith(under)) n++;
    } catch {}
  }
  return n;
}
