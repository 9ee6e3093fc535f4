#pragma warning disable OPENAI001 // Seed is marked experimental in the SDK.
using System.ClientModel;
using GptSharp.Generation;
using GptSharp.Serving;
using GptSharp.Tokenization;
using Microsoft.Extensions.AI;
using OpenAI;
using OpenAI.Chat;
using ChatFinishReason = OpenAI.Chat.ChatFinishReason;
using ChatMessage = OpenAI.Chat.ChatMessage;

namespace GptSharp.Tests.Serving;

/// <summary>The server through the official OpenAI .NET SDK, and through Microsoft.Extensions.AI.OpenAI's adapter.</summary>
[Collection(ServingCollection.Name)]
public class OpenAiSdkTests(ServingFixture server)
{
    private ChatClient Client(string model = "gptsharp", string key = "unused") =>
        new(model, new ApiKeyCredential(key), new OpenAIClientOptions { Endpoint = server.Api, NetworkTimeout = TimeSpan.FromSeconds(60) });

    private static readonly ChatMessage[] Conversation = [new SystemChatMessage("You are terse."), new UserChatMessage("Every effort moves you")];

    private static string Transcript => ChatTemplate.Format([("system", "You are terse."), ("user", "Every effort moves you")]);

    /// <summary>What the served chat should answer: the reference continuation, cut at the chat's stop texts, leading spaces dropped.</summary>
    private string ExpectedReply(CompletionSettings settings, ulong seed)
    {
        string text = server.ReferenceText(Transcript, settings, seed);
        foreach (string stop in ChatTemplate.StopTexts)
            if (text.IndexOf(stop, StringComparison.Ordinal) is int at and >= 0) text = text[..at];
        return text.TrimStart();
    }

    [Fact]
    public void ChatCompletionMatchesTheLibrarysGeneratorWithTheSameSeed()
    {
        var options = new ChatCompletionOptions { Seed = 7, Temperature = 1.2f, TopP = 0.95f, MaxOutputTokenCount = 20 };
        ChatCompletion first = Client().CompleteChat(Conversation, options);
        ChatCompletion second = Client().CompleteChat(Conversation, options);

        var settings = new CompletionSettings { Temperature = 1.2f, TopP = 0.95f, MaxTokens = 20, Stop = ChatTemplate.StopTexts };
        Assert.Equal(ExpectedReply(settings, 7), first.Content[0].Text);
        Assert.Equal(first.Content[0].Text, second.Content[0].Text);
        Assert.Equal(ChatMessageRole.Assistant, first.Role);
        Assert.Equal(TextCompletion.Encode(Transcript).Length, first.Usage.InputTokenCount);
        Assert.InRange(first.Usage.OutputTokenCount, 1, 20);
        Assert.Equal(first.Usage.InputTokenCount + first.Usage.OutputTokenCount, first.Usage.TotalTokenCount);
        Assert.Contains(first.FinishReason, new[] { ChatFinishReason.Stop, ChatFinishReason.Length });
        if (first.FinishReason == ChatFinishReason.Length) Assert.Equal(20, first.Usage.OutputTokenCount);
    }

    [Fact]
    public void StreamingChatGivesTheSameTextAndUsage()
    {
        var options = new ChatCompletionOptions { Seed = 11, Temperature = 1f, MaxOutputTokenCount = 25 };
        string whole = Client().CompleteChat(Conversation, options).Value.Content[0].Text;

        var text = new System.Text.StringBuilder();
        ChatFinishReason? finish = null;
        ChatTokenUsage? usage = null;
        int updates = 0;
        foreach (StreamingChatCompletionUpdate update in Client().CompleteChatStreaming(Conversation, options))
        {
            updates++;
            foreach (var part in update.ContentUpdate) text.Append(part.Text);
            finish ??= update.FinishReason;
            usage ??= update.Usage;
        }
        Assert.Equal(whole, text.ToString());
        Assert.NotNull(finish);
        Assert.True(updates > 2, $"only {updates} updates: the text did not stream");
        Assert.NotNull(usage);
        Assert.Equal(TextCompletion.Encode(Transcript).Length, usage!.InputTokenCount);
    }

    [Fact]
    public void StopCutsTheReplyExactlyBeforeTheStopText()
    {
        var options = new ChatCompletionOptions { Seed = 3, Temperature = 1f, MaxOutputTokenCount = 30 };
        string full = Client().CompleteChat(Conversation, options).Value.Content[0].Text;
        Assert.True(full.Length >= 8, $"the reply is too short to cut: \"{full}\"");
        string stop = full.Substring(full.Length / 2, 3);
        options.StopSequences.Add(stop);
        ChatCompletion cut = Client().CompleteChat(Conversation, options);
        Assert.Equal(full[..full.IndexOf(stop, StringComparison.Ordinal)].TrimStart(), cut.Content[0].Text);
        Assert.Equal(ChatFinishReason.Stop, cut.FinishReason);
        Assert.True(cut.Usage.OutputTokenCount < 30);

        // Streamed, the held-back text that could start the stop text never leaks.
        var streamed = new System.Text.StringBuilder();
        foreach (var update in Client().CompleteChatStreaming(Conversation, options))
            foreach (var part in update.ContentUpdate) streamed.Append(part.Text);
        Assert.Equal(cut.Content[0].Text, streamed.ToString());
    }

    [Fact]
    public void LogprobsShowTheModelsDistribution()
    {
        var options = new ChatCompletionOptions { Seed = 5, Temperature = 0f, MaxOutputTokenCount = 6, IncludeLogProbabilities = true, TopLogProbabilityCount = 5 };
        ChatCompletion reply = Client().CompleteChat(Conversation, options);
        var tokens = reply.ContentTokenLogProbabilities;
        Assert.Equal(reply.Usage.OutputTokenCount, tokens.Count);
        foreach (var token in tokens)
        {
            Assert.True(token.LogProbability <= 0);
            Assert.Equal(5, token.TopLogProbabilities.Count);
            // Greedy: the picked token is the most likely one.
            Assert.Equal(token.TopLogProbabilities[0].LogProbability, token.LogProbability, 5);
            for (int i = 1; i < 5; i++) Assert.True(token.TopLogProbabilities[i].LogProbability <= token.TopLogProbabilities[i - 1].LogProbability);
            if (!token.Token.StartsWith("bytes:", StringComparison.Ordinal))
                Assert.Equal(token.Token, System.Text.Encoding.UTF8.GetString(token.Utf8Bytes!.Value.Span));
        }
        Assert.Equal(Gpt2Tokenizer.Instance.Decode(tokens.Select(t => Gpt2Tokenizer.Instance.Encode(t.Token).Single()).ToArray()).TrimStart(), reply.Content[0].Text);
    }

    [Fact]
    public void ErrorsSurfaceAsTheSdksExceptions()
    {
        var tooHot = Assert.Throws<ClientResultException>(() => Client().CompleteChat(Conversation, new ChatCompletionOptions { Temperature = 5f }));
        Assert.Equal(400, tooHot.Status);
        Assert.Contains("temperature", tooHot.Message);
        var unknown = Assert.Throws<ClientResultException>(() => Client("gpt-4o").CompleteChat(Conversation));
        Assert.Equal(404, unknown.Status);
        var longPrompt = new UserChatMessage(string.Join(' ', Enumerable.Repeat("word", 100)));
        var tooLong = Assert.Throws<ClientResultException>(() => Client().CompleteChat([longPrompt]));
        Assert.Equal(400, tooLong.Status);
        Assert.Contains("context length", tooLong.Message);
        // Still serving.
        Assert.NotEmpty(Client().CompleteChat(Conversation, new ChatCompletionOptions { MaxOutputTokenCount = 3, Seed = 1 }).Value.Content);
    }

    [Fact]
    public async Task MicrosoftExtensionsAiOpenAiClientMeetsTheServer()
    {
        IChatClient chat = Client().AsIChatClient();
        var options = new ChatOptions { Seed = 9, Temperature = 0.9f, MaxOutputTokens = 15 };
        var messages = new[] { new Microsoft.Extensions.AI.ChatMessage(Microsoft.Extensions.AI.ChatRole.System, "You are terse."),
            new Microsoft.Extensions.AI.ChatMessage(Microsoft.Extensions.AI.ChatRole.User, "Every effort moves you") };
        ChatResponse response = await chat.GetResponseAsync(messages, options);
        Assert.Equal(ExpectedReply(new CompletionSettings { Temperature = 0.9f, MaxTokens = 15, Stop = ChatTemplate.StopTexts }, 9), response.Text);
        Assert.Equal(TextCompletion.Encode(Transcript).Length, response.Usage!.InputTokenCount);

        var streamed = new System.Text.StringBuilder();
        await foreach (var update in chat.GetStreamingResponseAsync(messages, options)) streamed.Append(update.Text);
        Assert.Equal(response.Text, streamed.ToString());

        // The in-process IChatClient over the same scheduler answers the same.
        using var local = new GptChatClient(server.Scheduler);
        Assert.Equal(response.Text, (await local.GetResponseAsync(messages, options)).Text);
    }
}
