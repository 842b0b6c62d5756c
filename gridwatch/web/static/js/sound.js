// The audible cue for fire and smoke: a short two-tone alarm from a Web Audio oscillator (no sound file).
// Browsers start audio only after a gesture, so the cue is behind a "Sound" toggle; the choice is kept, and
// after a reload the first click on the page wakes the audio again.

const KEY = "gridwatch.sound";
let context = null;
const listeners = new Set();

export function soundWanted() {
  return localStorage.getItem(KEY) === "on";
}

export function onSoundChange(fn) {
  listeners.add(fn);
  return () => listeners.delete(fn);
}

function audio() {
  if (!context) {
    const Ctx = window.AudioContext || window.webkitAudioContext;
    if (!Ctx) return null;
    context = new Ctx();
  }
  if (context.state === "suspended") context.resume().catch(() => {});
  return context;
}

export function setSound(on) {
  localStorage.setItem(KEY, on ? "on" : "off");
  if (on) {
    audio();
    beep(1);
  }
  for (const fn of listeners) fn(on);
}

/** Play the alarm `times` times (when sound is on). */
export function beep(times = 3) {
  if (!soundWanted()) return false;
  const ctx = audio();
  if (!ctx) return false;
  const start = ctx.currentTime + 0.02;
  const gain = ctx.createGain();
  gain.connect(ctx.destination);
  gain.gain.setValueAtTime(0.0001, start);
  const osc = ctx.createOscillator();
  osc.type = "square";
  osc.connect(gain);
  for (let i = 0; i < times * 2; i++) {
    const t = start + i * 0.22;
    osc.frequency.setValueAtTime(i % 2 ? 660 : 880, t);
    gain.gain.setValueAtTime(0.18, t);
    gain.gain.exponentialRampToValueAtTime(0.0001, t + 0.2);
  }
  osc.start(start);
  osc.stop(start + times * 2 * 0.22 + 0.05);
  window.__gridwatchBeeps = (window.__gridwatchBeeps || 0) + 1; // for tests and debugging
  return true;
}

/** After a reload with sound on, the first gesture on the page resumes the audio context. */
export function wakeOnGesture() {
  const wake = () => {
    if (soundWanted()) audio();
    document.removeEventListener("pointerdown", wake);
    document.removeEventListener("keydown", wake);
  };
  document.addEventListener("pointerdown", wake);
  document.addEventListener("keydown", wake);
}

export function soundToggle() {
  const button = document.createElement("button");
  button.type = "button";
  button.className = "btn btn-ghost sound-toggle";
  const render = (on) => {
    button.textContent = on ? "Sound on" : "Sound off";
    button.setAttribute("aria-pressed", on ? "true" : "false");
    button.title = on ? "Fire and smoke alerts play an alarm" : "Turn on the alarm for fire and smoke alerts";
  };
  render(soundWanted());
  button.addEventListener("click", () => setSound(!soundWanted()));
  onSoundChange(render);
  return button;
}
