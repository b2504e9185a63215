"""The StPR model: adapted CLIP tower, temporal experts, router, text classifier."""
