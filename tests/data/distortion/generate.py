"""Writes opencv_projections.json: points of the camera frame and the pixels where OpenCV
projects them through three lenses, one per ROS distortion model, and the rays OpenCV
finds for a grid of pixels, for tests/points.rs (our undistortion must give the points
back from the pixels, our projection the pixels, our clouds OpenCV's rays).

    python3 -m venv /tmp/cv && /tmp/cv/bin/pip install opencv-python-headless numpy
    /tmp/cv/bin/python tests/data/distortion/generate.py

Generated with OpenCV 5.1.0 (cv2.projectPoints and cv2.undistortPoints for plumb_bob
and rational_polynomial, cv2.fisheye.projectPoints and undistortPoints for equidistant).
"""
import json
import os

import cv2
import numpy as np

WIDTH, HEIGHT = 640, 480
# The pixel grid of the rays, every STRIDE-th pixel in x and y.
STRIDE = 16
K = np.array([[520.0, 0.0, 318.5], [0.0, 515.0, 242.25], [0.0, 0.0, 1.0]])
LENSES = [
    # A typical webcam.
    ("plumb_bob", [-0.28, 0.07, 1e-3, -5e-4, 0.01]),
    # A wide lens calibrated with the rational model.
    ("rational_polynomial", [2.1, 0.6, 2e-4, -3e-4, 0.02, 2.4, 1.1, 0.1]),
    # A fisheye, with a wider field of view (smaller focal length below).
    ("equidistant", [-0.01, 0.05, -0.06, 0.02]),
]


def main():
    rng = np.random.default_rng(7)
    cases = []
    for model, d in LENSES:
        k = K.copy()
        if model == "equidistant":
            k[0, 0], k[1, 1] = 230.0, 228.0
        # Directions across the field of view (up to 0.9 rad from the optical axis, 1.45
        # for the fisheye), at depths 0.5-40 m.
        n = 400
        theta = rng.uniform(0.0, 1.45 if model == "equidistant" else 0.9, n)
        phi = rng.uniform(-np.pi, np.pi, n)
        rays = np.stack([np.tan(theta) * np.cos(phi), np.tan(theta) * np.sin(phi), np.ones(n)], 1)
        z = rng.uniform(0.5, 40.0, n)
        points = rays * z[:, None]
        zero = np.zeros(3)
        if model == "equidistant":
            pixels, _ = cv2.fisheye.projectPoints(points.reshape(-1, 1, 3), zero, zero, k, np.array(d))
        else:
            pixels, _ = cv2.projectPoints(points, zero, zero, k, np.array(d))
        pixels = pixels.reshape(-1, 2)
        inside = (
            (pixels[:, 0] >= 0) & (pixels[:, 0] <= WIDTH - 1)
            & (pixels[:, 1] >= 0) & (pixels[:, 1] <= HEIGHT - 1)
        )
        # Keep only rays inside the lens's fold-free region: the projection of a ray a
        # little farther out lies farther from the centre.
        centre = k[:2, 2]
        farther = rays.copy()
        farther[:, :2] *= 1.001
        if model == "equidistant":
            further_pixels, _ = cv2.fisheye.projectPoints(farther.reshape(-1, 1, 3), zero, zero, k, np.array(d))
        else:
            further_pixels, _ = cv2.projectPoints(farther, zero, zero, k, np.array(d))
        further_pixels = further_pixels.reshape(-1, 2)
        monotonic = np.linalg.norm(further_pixels - centre, axis=1) > np.linalg.norm(pixels - centre, axis=1)
        keep = inside & monotonic
        # The other way: the rays of the pixels (16i, 16j) by OpenCV's undistortion, null
        # where the ray found does not project back onto its pixel (OpenCV's fisheye
        # undistortion clamps the distorted angle to 90 degrees; this fisheye's corners
        # lie beyond).
        u, v = np.meshgrid(np.arange(0, WIDTH, STRIDE), np.arange(0, HEIGHT, STRIDE))
        grid = np.stack([u.ravel(), v.ravel()], 1).astype(np.float64).reshape(-1, 1, 2)
        criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 200, 1e-14)
        if model == "equidistant":
            rays_xy = cv2.fisheye.undistortPoints(grid, k, np.array(d), criteria=criteria)
        else:
            rays_xy = cv2.undistortPoints(grid, k, np.array(d), R=np.eye(3), P=np.eye(3), criteria=criteria)
        rays_xy = rays_xy.reshape(-1, 2)
        back = np.concatenate([rays_xy, np.ones((len(rays_xy), 1))], 1)
        if model == "equidistant":
            reprojected, _ = cv2.fisheye.projectPoints(back.reshape(-1, 1, 3), zero, zero, k, np.array(d))
        else:
            reprojected, _ = cv2.projectPoints(back, zero, zero, k, np.array(d))
        error = np.linalg.norm(reprojected.reshape(-1, 2) - grid.reshape(-1, 2), axis=1)
        grid_rays = [r.tolist() if e < 1e-6 else None for r, e in zip(rays_xy, error)]
        cases.append({
            "model": model,
            "d": d,
            "k": k.flatten().tolist(),
            "points": points[keep].tolist(),
            "pixels": pixels[keep].tolist(),
            "grid_rays": grid_rays,
        })
        print(f"{model}: {keep.sum()} of {n} points inside the image, "
              f"{sum(r is None for r in grid_rays)} of {len(grid_rays)} grid pixels without a ray")
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "opencv_projections.json")
    with open(out, "w") as f:
        json.dump({"opencv": cv2.__version__, "width": WIDTH, "height": HEIGHT, "stride": STRIDE, "cases": cases}, f, indent=None)
        f.write("\n")


if __name__ == "__main__":
    main()
