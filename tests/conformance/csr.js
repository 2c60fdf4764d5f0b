'use strict';
// A PKCS#10 certificate request (RFC 2986) from a Node KeyObject pair: a
// few lines of DER, so the client needs no X.509 library. Only the public
// key matters to the controller (docs/protocol.md §3.2 step 3).

const crypto = require('node:crypto');

function length(n) {
  if (n < 0x80) return Buffer.from([n]);
  const bytes = [];
  for (let rest = n; rest > 0; rest = Math.floor(rest / 256)) bytes.unshift(rest & 0xff);
  return Buffer.from([0x80 | bytes.length, ...bytes]);
}

function tlv(tag, ...parts) {
  const body = Buffer.concat(parts);
  return Buffer.concat([Buffer.from([tag]), length(body.length), body]);
}

function oid(dotted) {
  const arcs = dotted.split('.').map(Number);
  const out = [40 * arcs[0] + arcs[1]];
  for (const arc of arcs.slice(2)) {
    const base128 = [arc & 0x7f];
    for (let rest = Math.floor(arc / 128); rest > 0; rest = Math.floor(rest / 128)) {
      base128.unshift(0x80 | (rest & 0x7f));
    }
    out.push(...base128);
  }
  return tlv(0x06, Buffer.from(out));
}

const SEQUENCE = 0x30;
const SET = 0x31;
const OID_COMMON_NAME = '2.5.4.3';
const SIGNATURE = {
  // key type (curve) -> [digest for crypto.sign, signatureAlgorithm OID]
  prime256v1: ['sha256', '1.2.840.10045.4.3.2'], // ecdsa-with-SHA256
  secp384r1: ['sha384', '1.2.840.10045.4.3.3'], // ecdsa-with-SHA384
  ed25519: [null, '1.3.101.112'], // Ed25519 (RFC 8410): no separate digest
};

/** A CSR in PEM for {publicKey, privateKey}, subject CN=commonName. */
function certificateRequest({ publicKey, privateKey }, commonName) {
  const type = privateKey.asymmetricKeyDetails.namedCurve || privateKey.asymmetricKeyType;
  if (!(type in SIGNATURE)) throw new Error(`no CSR signature for ${type} keys`);
  const [digest, algorithm] = SIGNATURE[type];
  const subject = tlv(SEQUENCE, tlv(SET, tlv(SEQUENCE, oid(OID_COMMON_NAME), tlv(0x0c, Buffer.from(commonName)))));
  const info = tlv(
    SEQUENCE,
    tlv(0x02, Buffer.from([0])), // version 1
    subject,
    publicKey.export({ type: 'spki', format: 'der' }),
    Buffer.from([0xa0, 0x00]), // no attributes
  );
  const signature = crypto.sign(digest, info, privateKey); // ECDSA: DER Ecdsa-Sig-Value, as X.509 wants
  const request = tlv(
    SEQUENCE,
    info,
    tlv(SEQUENCE, oid(algorithm)),
    tlv(0x03, Buffer.from([0]), signature), // BIT STRING, no unused bits
  );
  const lines = request.toString('base64').match(/.{1,64}/g).join('\n');
  return `-----BEGIN CERTIFICATE REQUEST-----\n${lines}\n-----END CERTIFICATE REQUEST-----\n`;
}

module.exports = { certificateRequest };
