"""Classical models: the references on the student's inputs, the tree student and the blend."""
