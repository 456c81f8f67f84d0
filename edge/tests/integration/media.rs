//! Real media clients (ffmpeg, ffprobe) seeking through the edge.
