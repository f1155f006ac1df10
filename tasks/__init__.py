"""Task packages: prompt data, templates, presets and golden evaluation."""
