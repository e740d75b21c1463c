"""Pictures of what a model retrieves: retrieval grids (PNG and TensorBoard's Images tab) and the
embedding projector (TensorBoard's Projector tab). See docs/visualization.md."""
