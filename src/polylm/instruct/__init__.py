"""Instruction data and tuning: public instruction sets as conversations, the mixture, SFT examples."""
