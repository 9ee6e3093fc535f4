using System.CommandLine;
using System.Globalization;
using GptSharp.Data;
using GptSharp.Tokenization;
using GptSharp.Training;

namespace GptSharp.Cli.Commands;

/// <summary>
/// <c>gptsharp eval --model M --data F</c>: the book's <c>calc_loss_loader</c> on the training and validation
/// split of the data (90/10, as in chapter 5), printed as loss and perplexity. M is anything <c>generate</c> takes,
/// so <c>gptsharp eval --model gpt2-small</c> is exercise 5.5 (the book reports ≈ 3.75 / 3.56 on The Verdict). The loaders
/// are the chapter's: windows of 256 tokens with stride 256, batches of 2 (a model with a shorter context uses its own).
/// </summary>
internal static class EvalCommand
{
    /// <summary>The context length of chapter 5's loaders (GPT_CONFIG_124M shortened to 256).</summary>
    private const int BookContextLength = 256;

    public static Command Create()
    {
        var modelOptions = new ModelOptions();
        var dataOption = new Option<string?>("--data") { Description = "Text file, directory or glob of .txt files, or a token file (default: the bundled The Verdict)." };
        var contextOption = new Option<int?>("--context-length") { Description = "Window length and stride (default: 256 as the book's loaders, or the model's context length when shorter)." };
        var batchOption = new Option<int>("--batch-size") { Description = "Sequences per batch.", DefaultValueFactory = _ => 2 };
        var batchesOption = new Option<int?>("--batches") { Description = "Evaluate only the first N batches of each split (default: all, as the book)." };
        var threadsOption = new Option<int?>("--threads") { Description = "Worker threads (default: all cores)." };
        var command = new Command("eval", "Loss and perplexity of a model on the training and validation split of a text (chapter 5's calc_loss_loader).");
        modelOptions.AddTo(command);
        foreach (var o in new Option[] { dataOption, contextOption, batchOption, batchesOption, threadsOption }) command.Options.Add(o);
        command.SetAction(parse => CliErrors.Run(() =>
        {
            if (parse.GetValue(threadsOption) is int threads) Tensors.Workers.Count = threads;
            using var model = modelOptions.Load(parse);
            // The book's loaders use GPT_CONFIG_124M's 256 even for GPT-2 (1024): The Verdict's validation split has only 534 tokens.
            int contextLength = parse.GetValue(contextOption) ?? Math.Min(BookContextLength, model.Config.ContextLength);
            if (contextLength < 1 || contextLength > model.Config.ContextLength)
                throw new ArgumentException($"--context-length must be between 1 and the model's {model.Config.ContextLength}, got {contextLength}.");
            int batchSize = parse.GetValue(batchOption);
            int? batches = parse.GetValue(batchesOption);
            if (batches is < 1) throw new ArgumentException($"--batches must be positive, got {batches}.");
            using var data = TrainingData.Load(parse.GetValue(dataOption), 0.9, Gpt2Tokenizer.Instance);
            var loaders = DataLoaders.CreateTrainValidation(data.Train, data.Validation, batchSize, contextLength, contextLength, generator: null, shuffleTraining: false);
            var train = loaders.Train;
            Console.WriteLine($"Data: {data.Description}");
            model.Eval();
            double trainLoss = Pretraining.CalcLossLoader(train, model, batches);
            double valLoss = Pretraining.CalcLossLoader(loaders.Validation, model, batches);
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"Training loss: {trainLoss:F5}, perplexity {Pretraining.Perplexity(trainLoss):F2} ({Math.Min(batches ?? int.MaxValue, train.Count)} batches)"));
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"Validation loss: {valLoss:F5}, perplexity {Pretraining.Perplexity(valLoss):F2} ({Math.Min(batches ?? int.MaxValue, loaders.Validation.Count)} batches)"));
            return 0;
        }));
        return command;
    }
}
