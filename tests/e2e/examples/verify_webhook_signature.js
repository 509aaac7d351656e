// The CloudVPS Pro document's webhook signature check ("Webhook Security"), verbatim; the lines after the
// function are not in the document.
const crypto = require('crypto');

function verifyWebhookSignature(payload, signature, secret) {
  const expectedSignature = crypto
    .createHmac('sha256', secret)
    .update(payload, 'utf8')
    .digest('hex');
  
  return crypto.timingSafeEqual(
    Buffer.from(signature, 'hex'),
    Buffer.from(expectedSignature, 'hex')
  );
}

// Not in the document: one check per line of standard input, a JSON object {payload, signature, secret} with the
// raw body as text; the answer on its own line, "true", or "false" and why.
const readline = require('readline');
const lines = readline.createInterface({ input: process.stdin });
lines.on('line', (line) => {
  const { payload, signature, secret } = JSON.parse(line);
  let answer;
  try {
    answer = verifyWebhookSignature(payload, signature, secret) ? 'true' : 'false';
  } catch (error) {
    answer = 'false ' + error.message;
  }
  process.stdout.write(answer + '\n');
});
