import SluiceCLI
