"""One model at a time: resolving and loading it, its layout, the memory estimate, training, generating and
scoring, the kernel's session, export."""
