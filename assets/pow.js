// Rempart proof of work. The page loads this file; it then runs again as a Web Worker that
// finds a counter n such that SHA-256(token + n) starts with `difficulty` zero bits, using
// WebCrypto when the page is a secure context and a small SHA-256 below otherwise.
(function () {
  "use strict";

  function zeroBits(d) {
    var bits = 0;
    for (var i = 0; i < d.length; i++) {
      if (d[i] === 0) { bits += 8; continue; }
      return bits + Math.clz32(d[i]) - 24;
    }
    return bits;
  }

  var K = new Uint32Array([0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3, 0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2]);
  var H0 = [0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19];

  function sha256(msg) {
    var len = msg.length, blocks = (len + 9 + 63) >> 6;
    var buf = new Uint8Array(blocks * 64);
    buf.set(msg);
    buf[len] = 0x80;
    var view = new DataView(buf.buffer);
    view.setUint32(buf.length - 4, (len * 8) >>> 0);
    view.setUint32(buf.length - 8, Math.floor(len / 0x20000000));
    var h = H0.slice(), w = new Uint32Array(64);
    for (var b = 0; b < blocks; b++) {
      for (var i = 0; i < 16; i++) w[i] = view.getUint32(b * 64 + i * 4);
      for (i = 16; i < 64; i++) {
        var x = w[i - 15], y = w[i - 2];
        var s0 = ((x >>> 7) | (x << 25)) ^ ((x >>> 18) | (x << 14)) ^ (x >>> 3);
        var s1 = ((y >>> 17) | (y << 15)) ^ ((y >>> 19) | (y << 13)) ^ (y >>> 10);
        w[i] = (w[i - 16] + s0 + w[i - 7] + s1) | 0;
      }
      var a = h[0], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], k = h[7], bb = h[1];
      for (i = 0; i < 64; i++) {
        var S1 = ((e >>> 6) | (e << 26)) ^ ((e >>> 11) | (e << 21)) ^ ((e >>> 25) | (e << 7));
        var t1 = (k + S1 + ((e & f) ^ (~e & g)) + K[i] + w[i]) | 0;
        var S0 = ((a >>> 2) | (a << 30)) ^ ((a >>> 13) | (a << 19)) ^ ((a >>> 22) | (a << 10));
        var t2 = (S0 + ((a & bb) ^ (a & c) ^ (bb & c))) | 0;
        k = g; g = f; f = e; e = (d + t1) | 0; d = c; c = bb; bb = a; a = (t1 + t2) | 0;
      }
      h[0] = (h[0] + a) | 0; h[1] = (h[1] + bb) | 0; h[2] = (h[2] + c) | 0; h[3] = (h[3] + d) | 0;
      h[4] = (h[4] + e) | 0; h[5] = (h[5] + f) | 0; h[6] = (h[6] + g) | 0; h[7] = (h[7] + k) | 0;
    }
    var out = new Uint8Array(32), ov = new DataView(out.buffer);
    for (i = 0; i < 8; i++) ov.setUint32(i * 4, h[i] >>> 0);
    return out;
  }

  if (typeof document === "undefined") {
    // Worker side.
    self.onmessage = async function (ev) {
      var token = ev.data.token, difficulty = ev.data.difficulty;
      var enc = new TextEncoder();
      var subtle = self.crypto && self.crypto.subtle;
      var batch = 256;
      for (var n = 0; ; n += batch) {
        var inputs = [], i;
        for (i = 0; i < batch; i++) inputs.push(enc.encode(token + (n + i)));
        var digests = subtle
          ? await Promise.all(inputs.map(function (m) { return subtle.digest("SHA-256", m); }))
          : inputs.map(sha256);
        for (i = 0; i < batch; i++) {
          if (zeroBits(new Uint8Array(digests[i])) >= difficulty) {
            self.postMessage({ n: n + i });
            return;
          }
        }
      }
    };
    if (typeof module !== "undefined") module.exports = { sha256: sha256, zeroBits: zeroBits };
    return;
  }

  // Page side.
  var script = document.currentScript;
  var token = script.getAttribute("data-token");
  var difficulty = parseInt(script.getAttribute("data-difficulty"), 10);
  var back = script.getAttribute("data-return") || "/";
  var status = document.getElementById("rempart-status");
  if (status) status.textContent = status.getAttribute("data-working");
  function go(n) {
    location.replace("/.rempart/pass?t=" + token + "&n=" + n + "&r=" + encodeURIComponent(back));
  }
  try {
    var worker = new Worker(script.src);
    worker.onmessage = function (ev) {
      if (status) status.textContent = status.getAttribute("data-done");
      go(ev.data.n);
    };
    worker.postMessage({ token: token, difficulty: difficulty });
  } catch (err) {
    // No workers (very old browser): compute here, in slices, so the page stays responsive.
    var enc = new TextEncoder(), n = 0;
    (function slice() {
      for (var i = 0; i < 2000; i++, n++) {
        if (zeroBits(sha256(enc.encode(token + n))) >= difficulty) { go(n); return; }
      }
      setTimeout(slice, 0);
    })();
  }
})();
