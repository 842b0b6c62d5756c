// A camera's picture now (GET /cameras/{id}/frame: a JPEG the API grabs from the stream), into an <img>.

/**
 * Load the picture of `cameraId` into `img`. Resolves to {width, height} (the stream's own size, from the
 * answer's headers, else the JPEG's); rejects with an Error whose message says why there is none.
 */
export async function loadCameraPicture(cameraId, img, previous = null) {
  const response = await fetch(`/api/v1/cameras/${encodeURIComponent(cameraId)}/frame`, { credentials: "same-origin" });
  if (!response.ok) {
    const body = await response.json().catch(() => null);
    throw new Error(body?.detail || `HTTP ${response.status}`);
  }
  const url = URL.createObjectURL(await response.blob());
  if (previous) URL.revokeObjectURL(previous);
  img.src = url;
  await img.decode().catch(() => null);
  return {
    url,
    width: Number(response.headers.get("X-Frame-Width")) || img.naturalWidth,
    height: Number(response.headers.get("X-Frame-Height")) || img.naturalHeight,
  };
}
