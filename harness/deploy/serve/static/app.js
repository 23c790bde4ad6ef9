// The door page: a photo (file input with capture) or live camera frames go to
// POST /v1/gate; the answer is drawn as boxes on the photo and a large verdict.
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const verdictBox = $("verdict"), word = $("verdict-word"), detail = $("verdict-detail");
  const canvas = $("view"), facesList = $("faces"), errorLine = $("error");
  const video = $("video"), ageInput = $("min-age"), tokenInput = $("token");
  const COLOURS = { allow: "#1b7f3a", deny: "#b3261e", undefined: "#6b6b6b" };
  let busy = false, timer = null, stream = null;

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
      ageInput.value = info.min_age;
      showError("");
    } catch (err) { showError("The server cannot be reached: " + err.message); }
  }

  async function send(blob, name) {
    if (busy) return;
    busy = true;
    verdictBox.classList.add("busy");
    const form = new FormData();
    form.append("image", blob, name);
    try {
      const response = await fetch("/v1/gate?min_age=" + encodeURIComponent(ageInput.value || "18"),
                                   { method: "POST", headers: headers(), body: form });
      const answer = await response.json().catch(() => ({ error: "the server's answer was not JSON" }));
      if (!response.ok) {
        if (response.status === 401) $("settings").open = true;
        showVerdict("undefined", "Undefined", "not judged");
        showError(answer.error || ("HTTP " + response.status));
        return;
      }
      showError("");
      await draw(blob, answer.faces);
      const words = { allow: "Allow", deny: "Deny", undefined: "Undefined" };
      const share = answer.adult_probability == null ? "" :
        " · adult " + Math.round(answer.adult_probability * 100) + " % (needs " + Math.round(answer.threshold * 100) + " %)";
      showVerdict(answer.verdict, words[answer.verdict] || answer.verdict, answer.sentence + share);
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

  function frame() {
    if (!video.videoWidth) return;
    const grab = document.createElement("canvas");
    grab.width = video.videoWidth;
    grab.height = video.videoHeight;
    grab.getContext("2d").drawImage(video, 0, 0);
    grab.toBlob((blob) => blob && send(blob, "camera.jpg"), "image/jpeg", 0.9);
  }

  function schedule() {
    clearInterval(timer);
    timer = $("auto").checked && stream ? setInterval(frame, 1000) : null;
  }

  $("camera").addEventListener("click", async () => {
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      showError("This browser gives no camera here (it needs https or localhost); use Take photo.");
      return;
    }
    try {
      stream = await navigator.mediaDevices.getUserMedia({ video: { facingMode: "environment" }, audio: false });
      video.srcObject = stream;
      $("live").hidden = false;
      showError("");
      schedule();
    } catch (err) { showError("No camera: " + err.message); }
  });
  $("check").addEventListener("click", frame);
  video.addEventListener("click", frame);
  $("auto").addEventListener("change", schedule);
  $("stop").addEventListener("click", () => {
    if (stream) stream.getTracks().forEach((track) => track.stop());
    stream = null;
    video.srcObject = null;
    $("live").hidden = true;
    schedule();
  });

  loadInfo();
})();
