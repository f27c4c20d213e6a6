// speechllm web demo: upload or record audio, pick a task, watch the answer stream in,
// hear it spoken when the server has a TTS voice.  Plain JS, no dependencies, works offline.
"use strict";

const $ = (id) => document.getElementById(id);
const SERVER_FORMATS = { "audio/wav": "wav", "audio/x-wav": "wav", "audio/wave": "wav", "audio/flac": "flac",
  "audio/x-flac": "flac", "audio/mpeg": "mp3", "audio/mp3": "mp3", "audio/ogg": "ogg" };
const state = { model: null, audio: null, audioName: "", voices: [], recorder: null, busy: false };

// ---- API -------------------------------------------------------------------------------------
function headers(extra = {}) {
  const key = $("api-key").value.trim();
  return key ? { ...extra, Authorization: `Bearer ${key}` } : extra;
}

async function apiError(response) {
  try {
    const body = await response.json();
    return body.error?.message || `HTTP ${response.status}`;
  } catch { return `HTTP ${response.status}`; }
}

// Server-sent events: yields the text after "data: " of each event.
async function* sse(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const frame = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      for (const line of frame.split("\n")) if (line.startsWith("data: ")) yield line.slice(6);
    }
  }
}

async function loadServerInfo() {
  try {
    const r = await fetch("v1/models", { headers: headers() });
    if (!r.ok) { $("model").textContent = r.status === 401 ? "API key needed" : await apiError(r); return; }
    state.model = (await r.json()).data[0].id;
    $("model").textContent = state.model;
    const v = await fetch("v1/audio/voices", { headers: headers() });
    state.voices = v.ok ? (await v.json()).voices : [];
    $("voice").replaceChildren(...state.voices.map((name) => new Option(name, name)));
    $("speak-row").hidden = state.voices.length === 0;
  } catch (e) { $("model").textContent = "server unreachable"; }
  updateRun();
}

// ---- audio -----------------------------------------------------------------------------------
function setAudio(blob, name) {
  state.audio = blob;
  state.audioName = name;
  $("preview").src = URL.createObjectURL(blob);
  $("preview").hidden = false;
  $("audio-info").textContent = `${name} · ${(blob.size / 1024).toFixed(0)} KiB`;
  updateRun();
}

// Browser-decodable audio the server may not read (webm/opus from MediaRecorder, m4a) -> 16 kHz mono wav.
async function toWav(blob, rate = 16000) {
  const ctx = new AudioContext();
  const decoded = await ctx.decodeAudioData(await blob.arrayBuffer());
  ctx.close();
  const offline = new OfflineAudioContext(1, Math.ceil(decoded.duration * rate), rate);
  const source = offline.createBufferSource();
  source.buffer = decoded;
  source.connect(offline.destination);
  source.start();
  const samples = (await offline.startRendering()).getChannelData(0);
  const view = new DataView(new ArrayBuffer(44 + samples.length * 2));
  const text = (at, s) => [...s].forEach((c, i) => view.setUint8(at + i, c.charCodeAt(0)));
  text(0, "RIFF"); view.setUint32(4, 36 + samples.length * 2, true); text(8, "WAVEfmt ");
  view.setUint32(16, 16, true); view.setUint16(20, 1, true); view.setUint16(22, 1, true);
  view.setUint32(24, rate, true); view.setUint32(28, rate * 2, true); view.setUint16(32, 2, true);
  view.setUint16(34, 16, true); text(36, "data"); view.setUint32(40, samples.length * 2, true);
  samples.forEach((x, i) => view.setInt16(44 + i * 2, Math.max(-1, Math.min(1, x)) * 0x7fff, true));
  return new Blob([view], { type: "audio/wav" });
}

async function serverAudio(blob) {
  const format = SERVER_FORMATS[blob.type] || guessFormat(state.audioName);
  if (format) return { blob, format };
  try { return { blob: await toWav(blob), format: "wav" }; } catch { return { blob, format: "wav" }; }
}

function guessFormat(name) {
  const ext = (name.split(".").pop() || "").toLowerCase();
  return ["wav", "flac", "mp3", "ogg"].includes(ext) ? ext : null;
}

async function toggleRecord() {
  if (state.recorder) { state.recorder.stop(); return; }
  let stream;
  try { stream = await navigator.mediaDevices.getUserMedia({ audio: true }); } catch (e) {
    $("audio-info").textContent = `microphone unavailable: ${e.message}`; return;
  }
  const chunks = [];
  const recorder = new MediaRecorder(stream);
  recorder.ondataavailable = (e) => chunks.push(e.data);
  recorder.onstop = async () => {
    stream.getTracks().forEach((t) => t.stop());
    state.recorder = null;
    $("record").textContent = "● Record";
    $("record").classList.remove("recording");
    const recorded = new Blob(chunks, { type: recorder.mimeType });
    try { setAudio(await toWav(recorded), "recording.wav"); } catch { setAudio(recorded, "recording.webm"); }
  };
  recorder.start();
  state.recorder = recorder;
  $("record").textContent = "■ Stop";
  $("record").classList.add("recording");
}

// ---- tasks -----------------------------------------------------------------------------------
function task() { return document.querySelector("input[name=task]:checked").value; }

function updateRun() {
  $("run").disabled = state.busy || !state.audio || !state.model;
  $("hint").textContent = !state.model ? "waiting for the server" : !state.audio ? "choose or record audio first" : "";
}

function show(text, status) {
  $("answer").textContent = text;
  $("answer").dataset.state = status;
}

async function transcribeStream(endpoint, audio) {
  const form = new FormData();
  form.append("file", audio.blob, `audio.${audio.format}`);
  form.append("model", state.model);
  form.append("response_format", "json");
  form.append("stream", "true");
  const r = await fetch(endpoint, { method: "POST", body: form, headers: headers() });
  if (!r.ok) throw new Error(await apiError(r));
  let text = "";
  for await (const data of sse(r)) {
    const event = JSON.parse(data);
    if (event.error) throw new Error(event.error.message);
    if (event.type === "transcript.text.delta") show((text += event.delta), "streaming");
    if (event.type === "transcript.text.done") text = event.text;
  }
  return text;
}

async function askStream(audio, instruction) {
  const data = await new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result.split(",")[1]);
    reader.onerror = () => reject(new Error("could not read the audio"));
    reader.readAsDataURL(audio.blob);
  });
  const content = [{ type: "input_audio", input_audio: { data, format: audio.format } }];
  if (instruction) content.unshift({ type: "text", text: instruction });
  const body = { model: state.model, stream: true, messages: [{ role: "user", content }] };
  const r = await fetch("v1/chat/completions", { method: "POST", body: JSON.stringify(body),
    headers: headers({ "Content-Type": "application/json" }) });
  if (!r.ok) throw new Error(await apiError(r));
  let text = "";
  for await (const chunk of sse(r)) {
    if (chunk === "[DONE]") break;
    const event = JSON.parse(chunk);
    if (event.error) throw new Error(event.error.message);
    const delta = event.choices?.[0]?.delta?.content;
    if (delta) show((text += delta), "streaming");
  }
  return text.trim();
}

async function run() {
  state.busy = true;
  updateRun();
  $("reply").hidden = true;
  show("", "streaming");
  $("meta").textContent = "";
  const started = performance.now();
  try {
    const audio = await serverAudio(state.audio);
    const t = task();
    const text = t === "ask" ? await askStream(audio, $("instruction").value.trim())
      : await transcribeStream(t === "translate" ? "v1/audio/translations" : "v1/audio/transcriptions", audio);
    show(text, "done");
    $("meta").textContent = `${t} · ${((performance.now() - started) / 1000).toFixed(2)} s · ${state.model}`;
    if (text && state.voices.length && $("autospeak").checked) speak();
  } catch (e) {
    show(e.message, "error");
  } finally {
    state.busy = false;
    updateRun();
  }
}

async function speak() {
  const text = $("answer").textContent.trim();
  if (!text || !state.voices.length) return;
  try {
    const r = await fetch("v1/audio/speech", { method: "POST", headers: headers({ "Content-Type": "application/json" }),
      body: JSON.stringify({ model: "tts", input: text, voice: $("voice").value || null }) });
    if (!r.ok) { $("meta").textContent += ` · no spoken reply (${await apiError(r)})`; return; }
    $("reply").src = URL.createObjectURL(await r.blob());
    $("reply").hidden = false;
    $("reply").play().catch(() => {});  // autoplay may be blocked; the player stays visible
  } catch { /* no spoken reply; the text answer stands */ }
}

// ---- wiring ----------------------------------------------------------------------------------
$("api-key").value = localStorage.getItem("speechllm-api-key") || "";
$("api-key").addEventListener("change", () => {
  localStorage.setItem("speechllm-api-key", $("api-key").value.trim());
  loadServerInfo();
});
$("file").addEventListener("change", () => { const f = $("file").files[0]; if (f) setAudio(f, f.name); });
$("record").addEventListener("click", toggleRecord);
$("record").hidden = !(navigator.mediaDevices && window.MediaRecorder);
$("instruction").addEventListener("input", () => {
  if ($("instruction").value.trim()) document.querySelector("input[value=ask]").checked = true;
});
$("run").addEventListener("click", run);
$("speak").addEventListener("click", speak);
loadServerInfo();
