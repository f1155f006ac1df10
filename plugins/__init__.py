"""Built-in ivg plugins, registered through the ``ivg`` entry-point group."""
