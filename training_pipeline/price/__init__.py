"""Price models: the baselines, Lasso, XGBoost and the LSTM/GRU sequence models; their training and serving."""
