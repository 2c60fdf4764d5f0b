'use strict';
// Enrollment (docs/protocol.md §3): the CA found by its pin, a CSR, a certificate checked.

const crypto = require('node:crypto');
const tls = require('node:tls');
const grpc = require('@grpc/grpc-js');
const { certificateRequest } = require('./csr.js');
const { KEEPALIVE } = require('./wire.js');

function parsePin(text) {
  const pin = text.trim().toLowerCase();
  if (!/^sha256:[0-9a-f]{64}$/.test(pin)) throw new Error(`not a CA pin (sha256:<64 hex digits>): ${text}`);
  return pin;
}

function spkiPin(certificate) {
  const spki = certificate.publicKey.export({ type: 'spki', format: 'der' });
  return `sha256:${crypto.createHash('sha256').update(spki).digest('hex')}`;
}

/** §3.2 step 2: the presented chain, unverified; the CA certificate in it that matches the pin. */
function pinnedCa(target, pin) {
  const [host, port] = splitTarget(target);
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host, port, rejectUnauthorized: false }, () => {
      const chain = [];
      const seen = new Set();
      for (let cert = socket.getPeerCertificate(true); cert && cert.raw; cert = cert.issuerCertificate) {
        const fingerprint = cert.fingerprint256;
        if (seen.has(fingerprint)) break; // a self-signed certificate is its own issuer
        seen.add(fingerprint);
        chain.push(new crypto.X509Certificate(cert.raw));
      }
      socket.end();
      const ca = chain.find((cert) => cert.ca && spkiPin(cert) === pin);
      if (ca) resolve({ ca, chainLength: chain.length });
      else reject(new Error(`no CA certificate matching ${pin} among ${chain.length} presented`));
    });
    socket.on('error', reject);
  });
}

function splitTarget(target) {
  const at = target.lastIndexOf(':');
  return [target.slice(0, at), Number(target.slice(at + 1))];
}

/** Enrollment.Enroll on the enrollment port, trusting only the pinned CA (§3.2 step 4). */
function enrollCall(controller, ca, request) {
  const { swarm } = controller.wire;
  const client = new swarm.Enrollment(controller.enroll, grpc.credentials.createSsl(Buffer.from(ca.toString())), KEEPALIVE);
  return new Promise((resolve, reject) => {
    client.Enroll(request, { deadline: Date.now() + 30000 }, (err, reply) => {
      client.close();
      if (err) reject(err);
      else resolve(reply);
    });
  });
}

/**
 * Enroll a fresh drone with an ECDSA key on `curve` at controller ({wire,
 * enroll, gateway}): its identity for the gateway, and what is wrong with the answer.
 */
async function enrollDrone(controller, ca, token, name, curve = 'prime256v1') {
  const droneId = crypto.randomBytes(16).toString('hex');
  const keys = crypto.generateKeyPairSync('ec', { namedCurve: curve });
  const reply = await enrollCall(controller, ca, {
    token,
    csr_pem: Buffer.from(certificateRequest(keys, droneId)),
    drone_id: droneId,
    name,
  });
  const certificate = new crypto.X509Certificate(reply.certificate_pem);
  const replyCa = new crypto.X509Certificate(reply.ca_pem);
  const problems = [];
  if (spkiPin(replyCa) !== spkiPin(ca)) problems.push('ca_pem is not the pinned CA');
  const sans = (certificate.subjectAltName || '').split(', ');
  if (!sans.includes(`URI:urn:build-swarm:drone:${droneId}`)) problems.push(`SAN ${certificate.subjectAltName}`);
  if (!certificate.checkIssued(ca) || !certificate.verify(ca.publicKey)) problems.push('not issued by the CA');
  if (reply.drone_id !== droneId) problems.push(`drone_id echoed as ${reply.drone_id}`);
  if (Number(reply.not_after_unix) * 1000 !== Date.parse(certificate.validTo)) problems.push('not_after_unix');
  if (!certificate.keyUsage || !certificate.keyUsage.includes('1.3.6.1.5.5.7.3.2')) problems.push('no clientAuth EKU');
  return {
    droneId,
    // Random per agent process (§5.2): this client is one process for each drone it enrolls.
    instanceId: crypto.randomBytes(16).toString('hex'),
    name,
    problems,
    wire: controller.wire,
    gateway: controller.gateway,
    credentials: () =>
      grpc.credentials.createSsl(
        Buffer.from(ca.toString()),
        Buffer.from(keys.privateKey.export({ type: 'pkcs8', format: 'pem' })),
        Buffer.from(reply.certificate_pem),
      ),
  };
}

module.exports = { parsePin, spkiPin, pinnedCa, enrollCall, enrollDrone };
