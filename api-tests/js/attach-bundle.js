// Attaches a Sigstore bundle to an image with @sigstore/oci, the library sigstore-js
// uses: `node attach-bundle.js HOST REPO IMAGE_DIGEST BUNDLE_FILE [PREDICATE_TYPE]`.
// Prints the artifact descriptor the library returns, as JSON.
'use strict';
const fs = require('node:fs');
const { attachArtifactToImage } = require('@sigstore/oci');

const [host, repo, imageDigest, bundleFile, predicateType] = process.argv.slice(2);
const annotations = {
  'dev.sigstore.bundle.content': predicateType ? 'dsse-envelope' : 'message-signature',
  'dev.sigstore.bundle.predicateType': predicateType || 'https://sigstore.dev/cosign/sign/v1',
};

attachArtifactToImage({
  imageName: `${host}/${repo}`,
  imageDigest,
  artifact: fs.readFileSync(bundleFile),
  mediaType: 'application/vnd.dev.sigstore.bundle.v0.3+json',
  annotations,
  // Signet runs without authentication here: no sign-in.
  credentials: undefined,
})
  .then((descriptor) => console.log(JSON.stringify(descriptor)))
  .catch((err) => {
    console.error(err, err.cause);
    process.exit(1);
  });
