"""Classical models: the references on the student's inputs and the tree student."""
