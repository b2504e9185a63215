"""open_clip model configs shipped with stpr (package data), e.g. stpr-tiny."""
