// Who a Sigstore signing certificate names: the subject alternative name (an e-mail
// address or a URI, such as a CI workflow) and the OIDC issuer Fulcio recorded. Read
// for display only — the registry, not the page, decides whether a signature is valid.
//
// A minimal DER walk: certificate → tbsCertificate → extensions [3] → each
// (extnID, [critical], extnValue).

const SAN = "2.5.29.17";
/** Fulcio's issuer extensions: .1.8 holds a DER UTF8String, the older .1.1 raw text. */
const ISSUER_V2 = "1.3.6.1.4.1.57264.1.8";
const ISSUER_V1 = "1.3.6.1.4.1.57264.1.1";

function tlv(bytes, pos) {
  if (pos + 2 > bytes.length) throw new Error("truncated DER");
  const tag = bytes[pos];
  let length = bytes[pos + 1];
  let start = pos + 2;
  if (length & 0x80) {
    const count = length & 0x7f;
    if (count === 0 || count > 4) throw new Error("unsupported DER length");
    length = 0;
    for (let i = 0; i < count; i += 1) length = length * 256 + bytes[start + i];
    start += count;
  }
  const end = start + length;
  if (end > bytes.length) throw new Error("truncated DER");
  return { tag, start, end };
}

function children(bytes, node) {
  const out = [];
  for (let pos = node.start; pos < node.end;) {
    const child = tlv(bytes, pos);
    out.push(child);
    pos = child.end;
  }
  return out;
}

function oid(bytes, node) {
  const parts = [];
  let value = 0;
  for (let i = node.start; i < node.end; i += 1) {
    value = value * 128 + (bytes[i] & 0x7f);
    if (!(bytes[i] & 0x80)) {
      if (parts.length === 0) parts.push(Math.min(2, Math.floor(value / 40)), value - 40 * Math.min(2, Math.floor(value / 40)));
      else parts.push(value);
      value = 0;
    }
  }
  return parts.join(".");
}

const text = (bytes, node) => new TextDecoder().decode(bytes.subarray(node.start, node.end));

/** `{ identity, issuer }` from a DER certificate; fields it lacks are left out. */
export function certificateIdentity(der) {
  const result = {};
  const [tbs] = children(der, tlv(der, 0));
  const extensions = children(der, tbs).find((f) => f.tag === 0xa3);
  if (!extensions) return result;
  for (const extension of children(der, children(der, extensions)[0])) {
    const parts = children(der, extension);
    const id = oid(der, parts[0]);
    const value = parts[parts.length - 1];
    if (id === SAN) {
      for (const name of children(der, tlv(der, value.start))) {
        // [1] rfc822Name, [6] uniformResourceIdentifier.
        if ((name.tag === 0x81 || name.tag === 0x86) && !result.identity) result.identity = text(der, name);
      }
    } else if (id === ISSUER_V2) {
      result.issuer = text(der, tlv(der, value.start));
    } else if (id === ISSUER_V1 && !result.issuer) {
      result.issuer = text(der, value);
    }
  }
  return result;
}

/** The first certificate of a PEM text, as DER bytes. */
export function pemToDer(pem) {
  const match = /-----BEGIN CERTIFICATE-----([\s\S]+?)-----END CERTIFICATE-----/.exec(pem);
  if (!match) return null;
  const binary = atob(match[1].replace(/\s+/g, ""));
  return Uint8Array.from(binary, (c) => c.charCodeAt(0));
}

/** The signer named by a PEM certificate, or `null` when it cannot be read. */
export function signerOfPem(pem) {
  try {
    const der = pemToDer(pem);
    return der ? certificateIdentity(der) : null;
  } catch {
    return null;
  }
}
