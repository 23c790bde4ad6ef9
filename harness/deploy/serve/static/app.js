// The door page: a photo (file input with capture) or a live check goes to
// POST /v1/gate; the answer is drawn as boxes on the photo and a large verdict: ALLOW,
// ASK FOR ID, DENY, or NO FACE (retake). The minimum age is the server's; the page only
// shows it. A live check is 3 s of camera frames (8 a second) in which the person is asked
// to blink: the server allows only after it saw a blink (a photo held up never blinks).
// In live mode a verdict is held for a few seconds before the next check replaces it.
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const verdictBox = $("verdict"), word = $("verdict-word"), detail = $("verdict-detail");
  const canvas = $("view"), facesList = $("faces"), errorLine = $("error");
  const video = $("video"), tokenInput = $("token");
  const COLOURS = { allow: "#2e9e4f", deny: "#d93a2f", undefined: "#8a8a8a" };
  const WORDS = { allow: "Allow", ask_for_id: "Ask for ID", deny: "Deny", retake: "No face — retake" };
  const HOLD_MS = 3000;   // a live verdict stays this long before the next check
  const CHECK_FRAMES = 24, FRAME_MS = 125, FRAME_SIDE = 480;   // 3 s at 8 frames a second, 480 px
  let busy = false, watching = 0, stream = null, heldUntil = 0, facing = "environment";

  // A token may come in the URL's fragment (never sent to the server) or be typed once.
  const fromHash = new URLSearchParams(location.hash.slice(1)).get("token");
  if (fromHash) { sessionStorage.setItem("token", fromHash); history.replaceState(null, "", location.pathname); }
  tokenInput.value = sessionStorage.getItem("token") || "";
  $("settings-form").addEventListener("submit", (event) => event.preventDefault());
  tokenInput.addEventListener("change", () => { sessionStorage.setItem("token", tokenInput.value.trim()); loadInfo(); });

  function headers() {
    const token = tokenInput.value.trim();
    return token ? { Authorization: "Bearer " + token } : {};
  }

  function showVerdict(kind, big, small) {
    verdictBox.className = "verdict " + kind;
    verdictBox.dataset.verdict = kind;
    word.textContent = big;
    detail.textContent = small;
  }

  function showError(message) {
    errorLine.hidden = !message;
    errorLine.textContent = message || "";
  }

  async function loadInfo() {
    try {
      const response = await fetch("/v1/info", { headers: headers() });
      if (response.status === 401) { $("settings").open = true; showError("This server needs its access token (Settings)."); return; }
      const info = await response.json();
      $("model").textContent = info.model && info.model.name ? info.model.name + " · " + info.model.kind : "";
      $("min-age").textContent = "Minimum age " + info.min_age + ":";
      $("figures").textContent = info.door ? "model: " + info.door.words : "";
      const demo = $("demo");
      demo.hidden = !info.demo;
      demo.textContent = info.demo ? "DEMO — not for real checks: " + info.door.problems.join("; ") : "";
      showError("");
    } catch (err) { showError("The server cannot be reached: " + err.message); }
  }

  async function send(blob, name) {
    if (busy) return;
    busy = true;
    const form = new FormData();
    form.append("image", blob, name);
    await judge(form, [blob]);
  }

  // Sends the form (busy is set by the caller) and shows the answer over the photo the
  // server judged: the image, or one of the frames.
  async function judge(form, blobs) {
    verdictBox.classList.add("busy");
    try {
      const response = await fetch("/v1/gate", { method: "POST", headers: headers(), body: form });
      const answer = await response.json().catch(() => ({ error: "the server's answer was not JSON" }));
      if (!response.ok) {
        if (response.status === 401) $("settings").open = true;
        showVerdict("undefined", "Undefined", "not judged");
        showError(answer.error || ("HTTP " + response.status));
        return;
      }
      showError("");
      await draw(blobs[answer.frame ? answer.frame - 1 : 0], answer.faces);
      const about = answer.verdict === "retake" ? answer.why : answer.sentence + " · " + answer.why;
      showVerdict(answer.verdict, WORDS[answer.verdict] || answer.verdict, about);
      if (stream && answer.verdict !== "retake") heldUntil = Date.now() + HOLD_MS;
      list(answer.faces);
    } catch (err) {
      showVerdict("undefined", "Undefined", "not judged");
      showError("The photo could not be sent: " + err.message);
    } finally {
      busy = false;
      verdictBox.classList.remove("busy");
    }
  }

  async function draw(blob, faces) {
    const bitmap = await createImageBitmap(blob);
    const scale = Math.min(1, 1024 / Math.max(bitmap.width, bitmap.height));
    canvas.width = Math.round(bitmap.width * scale);
    canvas.height = Math.round(bitmap.height * scale);
    const context = canvas.getContext("2d");
    context.drawImage(bitmap, 0, 0, canvas.width, canvas.height);
    context.lineWidth = Math.max(3, canvas.width / 150);
    context.font = Math.max(14, Math.round(canvas.width / 28)) + "px system-ui, sans-serif";
    faces.forEach((face, index) => {
      if (!face.box) return;
      const [left, top, right, bottom] = face.box.map((v) => v * scale);
      const colour = COLOURS[face.gate] || COLOURS.undefined;
      context.strokeStyle = colour;
      context.strokeRect(left, top, right - left, bottom - top);
      context.fillStyle = colour;
      context.fillText(String(index + 1), left + 4, Math.max(16, top - 6));
    });
  }

  function list(faces) {
    facesList.replaceChildren(...faces.map((face) => {
      const item = document.createElement("li");
      item.className = face.gate || "undefined";
      item.textContent = face.sentence + (face.gate ? " — " + face.gate : "");
      return item;
    }));
  }

  $("photo").addEventListener("change", (event) => {
    const file = event.target.files[0];
    if (file) send(file, file.name);
    event.target.value = "";
  });

  const sleep = (ms) => new Promise((done) => setTimeout(done, ms));

  function grab() {
    const scale = Math.min(1, FRAME_SIDE / Math.max(video.videoWidth, video.videoHeight));
    const still = document.createElement("canvas");
    still.width = Math.round(video.videoWidth * scale);
    still.height = Math.round(video.videoHeight * scale);
    still.getContext("2d").drawImage(video, 0, 0, still.width, still.height);
    return new Promise((done) => still.toBlob(done, "image/jpeg", 0.85));
  }

  // One live check: the frames of 3 s while the person is asked to blink, in one request.
  // False when there was nothing to check yet (the camera still starting, a check running).
  async function check() {
    if (busy || !stream || !video.videoWidth) return false;
    busy = true;
    showVerdict("checking", "Look here and blink", "checking that this is a person, not a photo");
    const blobs = [];
    for (let n = 0; n < CHECK_FRAMES && stream; n++) {
      const started = Date.now();
      const blob = await grab();
      if (blob) blobs.push(blob);
      await sleep(Math.max(0, FRAME_MS - (Date.now() - started)));
    }
    if (!stream || !blobs.length) { busy = false; return false; }
    const form = new FormData();
    blobs.forEach((blob, n) => form.append("frame", blob, "frame" + (n + 1) + ".jpg"));
    await judge(form, blobs);
    return true;
  }

  // Checks one after another while the camera runs and "again and again" is on; a
  // verdict is held for HOLD_MS first. A newer loop ends the older one.
  async function watch() {
    const mine = ++watching;
    while (mine === watching && stream && $("auto").checked) {
      // Always a timer between turns: a loop of promises that resolve at once would never
      // let the page draw or the camera start.
      if (busy || Date.now() < heldUntil || !(await check())) await sleep(200);
    }
  }

  $("camera").addEventListener("click", async () => {
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      showError("This browser gives no camera here (it needs https or localhost); use Take photo.");
      return;
    }
    await startCamera();
  });

  async function startCamera() {
    if (stream) stream.getTracks().forEach((track) => track.stop());
    try {
      stream = await navigator.mediaDevices.getUserMedia({ video: { facingMode: facing }, audio: false });
      video.srcObject = stream;
      $("live").hidden = false;
      showError("");
      watch();
    } catch (err) { stream = null; showError("No camera: " + err.message); }
  }
  $("flip").addEventListener("click", () => {
    facing = facing === "environment" ? "user" : "environment";
    startCamera();
  });
  const checkNow = () => { heldUntil = 0; check(); };
  $("check").addEventListener("click", checkNow);
  video.addEventListener("click", checkNow);
  $("auto").addEventListener("change", watch);
  $("stop").addEventListener("click", () => {
    if (stream) stream.getTracks().forEach((track) => track.stop());
    stream = null;
    watching++;
    video.srcObject = null;
    $("live").hidden = true;
  });

  // Installable (a home-screen app): the service worker caches the page shell only.
  if ("serviceWorker" in navigator) navigator.serviceWorker.register("/sw.js").catch(() => {});

  loadInfo();
})();
