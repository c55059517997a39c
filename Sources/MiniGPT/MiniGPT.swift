// MiniGPT module
