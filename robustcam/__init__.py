"""robustcam: robustness evaluation for CAM-shaping losses."""

__version__ = "0.1.0"
