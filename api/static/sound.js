// The critical-alarm sound, made with WebAudio (no audio file to ship or fetch).
// Browsers start audio only after a person has touched the page, so the header shows a
// button to enable it until then.

let ctx = null;
let muted = localStorage.getItem("ew.muted") === "1";
const listeners = new Set();

export function onChange(fn) { listeners.add(fn); }
function changed() { listeners.forEach((fn) => fn()); }

export function isMuted() { return muted; }
export function isBlocked() { return !ctx || ctx.state !== "running"; }

export function setMuted(value) {
  muted = value;
  localStorage.setItem("ew.muted", value ? "1" : "0");
  changed();
}

// Called from any click or key press: the browser then lets the page make sound.
export function unlock() {
  try {
    if (!ctx) ctx = new AudioContext();
    if (ctx.state === "suspended") ctx.resume().then(changed, () => {});
  } catch { /* no audio device: the visual alarm is still there */ }
  changed();
}

// Two falling tones, three times: distinct from any notification sound of the OS.
export function beep() {
  document.body.dataset.beeps = String(Number(document.body.dataset.beeps || 0) + 1);
  if (muted || !ctx || ctx.state !== "running") return false;
  const t0 = ctx.currentTime + 0.02;
  for (let i = 0; i < 3; i++) {
    for (const [offset, freq] of [[0, 1046], [0.22, 784]]) {
      const start = t0 + i * 0.6 + offset;
      const osc = ctx.createOscillator();
      const gain = ctx.createGain();
      osc.type = "square";
      osc.frequency.value = freq;
      gain.gain.setValueAtTime(0, start);
      gain.gain.linearRampToValueAtTime(0.25, start + 0.01);
      gain.gain.setValueAtTime(0.25, start + 0.18);
      gain.gain.linearRampToValueAtTime(0, start + 0.2);
      osc.connect(gain).connect(ctx.destination);
      osc.start(start);
      osc.stop(start + 0.21);
    }
  }
  return true;
}
