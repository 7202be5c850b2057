"""The order-book action model: labels, dataset, network wrapper, training and serving."""
