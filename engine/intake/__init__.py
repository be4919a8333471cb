"""Getting leads into a flow: publishing to the intake topic, and generating realistic ones."""
