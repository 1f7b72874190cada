"""The runtime layer: starting Ray, the network's identities, assembling and driving a network."""
