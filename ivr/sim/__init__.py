"""The Twilio emulator and what QA builds on it."""
