using GptSharp.Data;
using GptSharp.Generation;
using GptSharp.Model;
using GptSharp.Tensors;
using GptSharp.Tokenization;

namespace GptSharp.Training;

/// <summary>
/// Chapter 5's functions, by their book names: the loss of a batch and of a loader, evaluation,
/// the greedy sample printed after each epoch, and <see cref="TrainModelSimple"/>.
/// </summary>
public static class Pretraining
{
    /// <summary>
    /// The book's <c>calc_loss_batch</c>: the mean cross-entropy of the model's next-token predictions for
    /// <paramref name="inputBatch"/> against <paramref name="targetBatch"/>. Call <c>Backward()</c> on the result to train.
    /// </summary>
    /// <remarks>The logits are computed a chunk of rows at a time and never exist whole (see <c>GptModel.ForwardLoss</c>).</remarks>
    public static Loss CalcLossBatch(TokenBatch inputBatch, TokenBatch targetBatch, GptModel model)
        => model.ForwardLoss(inputBatch, targetBatch);

    /// <summary>
    /// The book's <c>calc_loss_loader</c>: the mean batch loss over the first <paramref name="numBatches"/> batches
    /// (all when null), NaN for an empty loader. Starting the pass draws from the generator as PyTorch's
    /// <c>iter(data_loader)</c> does, so call it where the book calls it to keep the random stream aligned.
    /// Runs under <see cref="GptModel.NoGrad"/>: nothing is kept for a backward pass.
    /// </summary>
    public static double CalcLossLoader(DataLoader dataLoader, GptModel model, int? numBatches = null)
    {
        if (dataLoader.Count == 0) return double.NaN;
        int batches = numBatches is int n ? Math.Min(n, dataLoader.Count) : dataLoader.Count;
        double totalLoss = 0; // Python float (double) sum of float32 losses, as loss.item() gives
        using var noGrad = model.NoGrad();
        using var pass = dataLoader.StartEpoch();
        for (int i = 0; i < batches && pass.MoveNext(); i++)
        {
            var (input, target) = pass.Current;
            totalLoss += CalcLossBatch(input, target, model).Value;
        }
        return totalLoss / batches;
    }

    /// <summary>
    /// The book's <c>evaluate_model</c>: training and validation loss over <paramref name="evalIter"/> batches
    /// each, in eval mode (no dropout) and without gradients, then back to training mode.
    /// </summary>
    public static (double TrainLoss, double ValLoss) EvaluateModel(GptModel model, DataLoader trainLoader, DataLoader valLoader, int evalIter) =>
        EvaluateModel(model, trainLoader, valLoader, loader => CalcLossLoader(loader, model, evalIter));

    /// <summary><see cref="EvaluateModel(GptModel, DataLoader, DataLoader, int)"/> with another loader loss (split over ranks).</summary>
    internal static (double TrainLoss, double ValLoss) EvaluateModel(GptModel model, DataLoader trainLoader, DataLoader valLoader, Func<DataLoader, double> calcLossLoader)
    {
        model.Eval();
        try
        {
            double trainLoss = calcLossLoader(trainLoader);
            double valLoss = calcLossLoader(valLoader);
            return (trainLoss, valLoss);
        }
        finally
        {
            model.Train();
        }
    }

    /// <summary>Perplexity of a mean cross-entropy loss: <c>torch.exp(loss)</c>, the effective number of choices per token.</summary>
    public static double Perplexity(double loss) => Math.Exp(loss);

    /// <summary>
    /// The book's <c>generate_and_print_sample</c> without the print: 50 greedy tokens after
    /// <paramref name="startContext"/> in eval mode, decoded with newlines replaced by spaces so it fits on one line.
    /// </summary>
    /// <remarks>
    /// The book runs <c>generate_text_simple</c>, which passes the whole window through the model for every new
    /// token. The same greedy ids come out of the KV cache (prefill the prompt, then one position per token,
    /// re-prefilling when the window slides), which does a fraction of the work: a run samples after every epoch.
    /// </remarks>
    public static string GenerateSample(GptModel model, Gpt2Tokenizer tokenizer, string startContext, int maxNewTokens = 50)
    {
        using (model.EvalNoGrad())
        {
            int contextSize = model.PositionEmbedding.Value.Size(0);
            TokenBatch encoded = TokenConversions.TextToTokenIds(startContext, tokenizer);
            using var generator = new TextGenerator(model, new GenerationOptions { ContextSize = contextSize });
            TokenBatch tokenIds = generator.Generate(encoded, maxNewTokens);
            return TokenConversions.TokenIdsToText(tokenIds, tokenizer).Replace("\n", " ");
        }
    }

    /// <summary>
    /// The book's <c>train_model_simple</c>: <paramref name="numEpochs"/> passes over <paramref name="trainLoader"/>,
    /// one AdamW step per batch, an evaluation every <paramref name="evalFreq"/> steps printed as
    /// <c>Ep 1 (Step 000000): Train loss 9.781, Val loss 9.933</c>, and a greedy sample after every epoch.
    /// Returns the evaluated training and validation losses and the tokens seen at each evaluation.
    /// </summary>
    public static (List<double> TrainLosses, List<double> ValLosses, List<long> TrackTokensSeen) TrainModelSimple(
        GptModel model, DataLoader trainLoader, DataLoader valLoader, AdamW optimizer, int numEpochs, int evalFreq, int evalIter,
        string startContext, Gpt2Tokenizer tokenizer, TextWriter? output = null)
    {
        output ??= Console.Out;
        var options = new TrainingOptions { Epochs = numEpochs, EvalFreq = evalFreq, EvalIter = evalIter, StartContext = startContext };
        var trainer = new Trainer(model, optimizer, new TrainValidationLoaders(trainLoader, valLoader), options, tokenizer);
        trainer.Evaluated += e => output.WriteLine(e.BookLine);
        trainer.Sampled += s => output.WriteLine(s.Text);
        trainer.Run();
        var state = trainer.State;
        return (state.TrainLosses.ToList(), state.ValLosses.ToList(), state.TrackTokensSeen.ToList());
    }
}
