// A look at one camera from the camera wall: its picture now (grabbed by the API from the stream), a newer
// one on request. Staff only, as the route is.

import { h } from "./dom.js";
import { loadCameraPicture } from "./picture.js";

export function openCameraView(camera) {
  const picture = h("img", { class: "camera-view-picture", alt: `What ${camera.name} sees now`, hidden: true });
  const note = h("p", { class: "muted camera-view-note", text: "Loading the camera's picture…" });
  const again = h("button", { type: "button", class: "btn btn-small btn-ghost", id: "camera-view-again", text: "New picture" });
  const close = h("button", { type: "button", class: "btn", id: "camera-view-close", text: "Close" });
  const dialog = h(
    "dialog",
    { class: "camera-view", "aria-label": `${camera.name} now`, dataset: { camera: camera.id } },
    h("div", { class: "zone-head" }, h("h3", { text: `${camera.name} now` }), again),
    picture,
    note,
    h("div", { class: "form-buttons zone-buttons" }, close),
  );
  let url = null;
  const load = async () => {
    again.disabled = true;
    delete dialog.dataset.picture;
    note.textContent = "Loading the camera's picture…";
    try {
      const loaded = await loadCameraPicture(camera.id, picture, url);
      url = loaded.url;
      picture.hidden = false;
      note.textContent = `${loaded.width}×${loaded.height}, taken at ${new Date().toLocaleTimeString()}.`;
      dialog.dataset.picture = "loaded";
    } catch (err) {
      picture.hidden = true;
      note.textContent = `No picture from the camera: ${err.message}`;
      dialog.dataset.picture = "failed";
    } finally {
      again.disabled = false;
    }
  };
  again.addEventListener("click", load);
  close.addEventListener("click", () => dialog.close());
  dialog.addEventListener("close", () => {
    if (url) URL.revokeObjectURL(url);
    dialog.remove();
  });
  document.body.append(dialog);
  dialog.showModal();
  load();
  return dialog;
}
