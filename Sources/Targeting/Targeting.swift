// Targeting module
